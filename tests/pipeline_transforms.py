"""Custom transforms for the pipeline tests, importable by spawned workers (tests/ is on
``sys.path`` under pytest, and spawn copies ``sys.path`` into every worker)."""

from __future__ import annotations


def cube(n: int) -> int:
    """Return ``n ** 3``."""
    return n * n * n


def die_on_13(n: int) -> int:
    """Square ``n``, but kill the worker process on 13 (like an OOM kill mid-chunk)."""
    if n == 13:
        import os

        os._exit(70)
    return n * n


def hang(n: int) -> int:
    """Block forever: keeps a run busy until it is killed (the orphan test)."""
    import threading

    threading.Event().wait()
    return n


def exit_on_13(n: int) -> int:
    """Square ``n``, but call ``sys.exit(3)`` on 13 (a transform that exits)."""
    if n == 13:
        import sys

        sys.exit(3)
    return n * n
