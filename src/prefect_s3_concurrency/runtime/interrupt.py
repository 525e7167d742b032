"""Stopping a command-line run on Ctrl-C (SIGINT) or SIGTERM, within two seconds.

:func:`handle_signals` makes both signals raise :class:`Interrupted` (a ``KeyboardInterrupt``,
which Prefect's engine turns into a crashed run) in the main thread and set :data:`STOP`.
The transfer loops read :data:`STOP` before each object and the batch loop before each batch,
so nothing new starts and the requests in flight end by themselves. Should the run still not
have ended :data:`DEADLINE` seconds after the signal (a request that hangs), the process
prints its one line and exits with the signal's code anyway; a second signal does so at once.

While a flow runs, Prefect's engine installs its own SIGTERM handler (it records the run as
crashed and re-sends the signal to the previous handler, ours). A thread reading the signal
wake-up fd (``signal.set_wakeup_fd``) sees every signal as it arrives, whichever handler is
installed, so work stops at once either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP = threading.Event()
DEADLINE = float(
    os.environ.get("PREFECT_S3_STOP_DEADLINE", "1.6")
)  # s to a forced exit (tests may raise it)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
MESSAGES = {signal.SIGINT: "interrupted (Ctrl-C)", signal.SIGTERM: "terminated (SIGTERM)"}
_received: list[signal.Signals] = []
_said = threading.Lock()
_first = threading.Lock()


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the run receives SIGINT or SIGTERM."""


def stopping() -> bool:
    """True once the run was asked to stop."""
    return STOP.is_set()


def received() -> signal.Signals | None:
    """The first signal received, if any."""
    return _received[0] if _received else None


def exit_code() -> int:
    """130 after SIGINT (and by default), 143 after SIGTERM."""
    return EXIT_CODES.get(received() or signal.SIGINT, 130)


def say_once(print_line: Callable[[str], None]) -> None:
    """Print the stop line (e.g. ``error: interrupted (Ctrl-C)``) once per process."""
    if _said.acquire(blocking=False):
        print_line(MESSAGES.get(received() or signal.SIGINT, "interrupted"))


def leave(code: int) -> None:
    """Exit now with ``code``, without waiting for threads still ending their last request
    (interpreter shutdown joins them: seconds). A download's temp file such a thread leaves
    is removed by the next run into the same directory."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _force_exit(print_line: Callable[[str], None]) -> None:
    say_once(print_line)
    leave(exit_code())


def _stop(signum: int, print_line: Callable[[str], None]) -> None:
    """Record the first signal, stop new work, and arm the forced exit (once)."""
    with _first:
        if STOP.is_set():
            return
        _received.append(signal.Signals(signum))
        STOP.set()
    timer = threading.Timer(DEADLINE, _force_exit, (print_line,))
    timer.daemon = True
    timer.start()


def _watch(read_fd: int, print_line: Callable[[str], None]) -> None:
    """See every signal as it arrives, whichever Python handler is installed (Prefect's flow
    engine installs its own SIGTERM handler while a flow runs)."""
    while True:
        data = os.read(read_fd, 64)
        if not data:
            os.close(read_fd)
            return
        for signum in data:
            if signum in EXIT_CODES:
                _stop(signum, print_line)


@contextlib.contextmanager
def handle_signals(print_line: Callable[[str], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM while the block runs (main thread only); restore after.

    A signal stops new work at once (:data:`STOP`) and raises :class:`Interrupted` in the main
    thread; a second one, or :data:`DEADLINE` seconds without an exit, ends the process.
    """
    raised: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:  # Prefect re-sends SIGTERM here, once
        _stop(signum, print_line)
        if raised:  # a second signal: leave now
            _force_exit(print_line)
        raised.append(signum)
        raise Interrupted

    STOP.clear()
    _received.clear()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(read_fd, print_line), daemon=True).start()
    previous = {sig: signal.signal(sig, on_signal) for sig in EXIT_CODES}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the watcher reads end-of-file and closes its end
