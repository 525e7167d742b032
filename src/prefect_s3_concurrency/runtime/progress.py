"""An in-process progress hook: transfer loops report, listeners (e.g. a progress bar) observe.

The per-object loop of the transfer functions calls :func:`report` for every object it
finishes (transferred or already identical), and the planners call :func:`expect` with the
work they planned. Nothing is reported across processes: listeners see the transfers of the
flow run in their own process, which is where the transfer tasks run (on threads).

With no listener, both calls cost one attribute read. Listeners are called on the transfer
threads, so they must be thread-safe and quick; an exception in a listener is swallowed, never
raised into a transfer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

__all__ = ["ProgressListener", "expect", "listening", "planned", "report"]


class ProgressListener(Protocol):
    """Receives progress; both methods may be called from many threads at once."""

    def expect(self, objects: int, nbytes: int) -> None:
        """More work was planned: ``objects`` objects of ``nbytes`` bytes in all."""

    def advance(self, objects: int, nbytes: int) -> None:
        """``objects`` objects of ``nbytes`` bytes were finished."""


_listeners: tuple[ProgressListener, ...] = ()  # replaced, never mutated: readers need no lock
_lock = threading.Lock()


def report(objects: int, nbytes: int) -> None:
    """Tell every listener that ``objects`` objects (``nbytes`` bytes) were finished."""
    for listener in _listeners:
        try:
            listener.advance(objects, nbytes)
        except Exception:  # noqa: BLE001 - a display problem must not fail a transfer
            pass


def expect(objects: int, nbytes: int) -> None:
    """Tell every listener that ``objects`` objects (``nbytes`` bytes) were planned."""
    for listener in _listeners:
        try:
            listener.expect(objects, nbytes)
        except Exception:  # noqa: BLE001 - a display problem must not fail a transfer
            pass


def planned() -> None:
    """Tell every listener that all the work is planned (a listing ended): the totals are final.

    Listeners without a ``planned`` method are skipped.
    """
    for listener in _listeners:
        try:
            getattr(listener, "planned", lambda: None)()
        except Exception:  # noqa: BLE001 - a display problem must not fail a transfer
            pass


@contextmanager
def listening(listener: ProgressListener) -> Iterator[ProgressListener]:
    """Subscribe ``listener`` for the duration of the ``with`` block.

    Args:
        listener: An object with ``expect`` and ``advance`` methods.

    Yields:
        The listener.
    """
    global _listeners
    with _lock:
        _listeners = (*_listeners, listener)
    try:
        yield listener
    finally:
        with _lock:
            _listeners = tuple(x for x in _listeners if x is not listener)
