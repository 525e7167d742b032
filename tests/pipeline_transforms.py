"""Custom transforms for the pipeline tests, importable by spawned workers (tests/ is on
``sys.path`` under pytest, and spawn copies ``sys.path`` into every worker)."""

from __future__ import annotations


def cube(n: int) -> int:
    """Return ``n ** 3``."""
    return n * n * n
