"""A watchdog process that ends whatever a killed command-line run leaves behind (Linux).

A run started from the command line has children of its own: Prefect's temporary API
server (``uvicorn``, ~240 MB) when no ``PREFECT_API_URL`` is set, the process-pool workers
(~115 MB each) and multiprocessing's resource tracker. A run that exits normally stops them;
one killed with ``SIGKILL`` cannot, and they would be reparented to init and live on.

:func:`start_watchdog` starts this file as a small stdlib-only process that holds the read
end of a pipe whose write end only the run holds. While the run lives, the watchdog records
the run's process tree from ``/proc`` every :data:`INTERVAL` seconds. When the pipe reaches
end-of-file, the run is gone (however it ended), and the watchdog sends ``SIGTERM`` to every
recorded process still alive (same PID *and* start time, so a reused PID is never hit),
then ``SIGKILL`` to those still there after :data:`GRACE` seconds, and exits. A child the
run started after the last snapshot is found too: it is in the run's process group, started
after the run, and was reparented to the same reaper as the watchdog itself.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

INTERVAL = 0.25  # seconds between two snapshots of the run's process tree
GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_pipe_fd: int | None = None  # write end, held by the run for its whole life
_proc: subprocess.Popen[bytes] | None = None


def _fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in (b"Z", b"X") else fields


def process_stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, start time in clock ticks)`` of a live process, None if gone or a zombie."""
    fields = _fields(pid)
    return None if fields is None else (int(fields[1]), int(fields[19]))


def _wait_exited(pid: int, start: int, timeout: float = 2.0) -> None:
    """Wait until ``pid`` is a zombie or gone: its children have been reparented by then (a
    dying process closes its files, so the pipe reaches end-of-file, before that)."""
    deadline = time.monotonic() + timeout
    while (process_stat(pid) or (0, -1))[1] == start and time.monotonic() < deadline:
        time.sleep(0.01)


def _orphans(pgrp: int, since: int, run: int) -> dict[int, int]:
    """Processes of process group ``pgrp`` started at or after ``since`` that were
    reparented to the same reaper as this watchdog, or are still the dead ``run``'s (children
    the run started just before it died, too late for the last snapshot)."""
    parents, found = {os.getppid(), run}, {}
    for entry in os.listdir("/proc"):
        fields = _fields(int(entry)) if entry.isdigit() else None
        if fields and int(fields[1]) in parents and int(fields[2]) == pgrp:
            if int(fields[19]) >= since and int(entry) != os.getpid():
                found[int(entry)] = int(fields[19])
    return found


def descendants(root: int) -> dict[int, int]:
    """Return ``pid -> start time`` of every live descendant of ``root``.

    A descendant that leads a session of its own (``start_new_session``, like the local
    Prefect server's supervisor) chose to outlive the run: it and its subtree are left out.
    """
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        fields = _fields(int(entry)) if entry.isdigit() else None
        if fields is not None and int(fields[3]) != int(entry):  # not a session leader
            children.setdefault(int(fields[1]), []).append(int(entry))
            starts[int(entry)] = int(fields[19])
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = starts[pid]
                todo.append(pid)
    return found


def _alive(known: dict[int, int]) -> list[int]:
    return [pid for pid, start in known.items() if (process_stat(pid) or (0, -1))[1] == start]


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def reap(known: dict[int, int]) -> None:
    """Stop the recorded processes, and their children: SIGTERM, then SIGKILL after
    :data:`GRACE` seconds."""
    for pid in list(known):  # children started by survivors since the last snapshot
        known.update(descendants(pid))
    known.pop(os.getpid(), None)
    _signal_all(_alive(known), signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while _alive(known) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(_alive(known), signal.SIGKILL)


def watch(parent: int, fd: int = 0) -> None:
    """Record ``parent``'s tree until ``fd`` reaches end-of-file, then :func:`reap` it."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # Ctrl-C or a closed terminal: outlive them
        signal.signal(sig, signal.SIG_IGN)
    run = _fields(parent)
    known: dict[int, int] = {}
    while True:
        ready, _, _ = select.select([fd], [], [], INTERVAL)
        if ready and not os.read(fd, 4096):
            break
        known.update(descendants(parent))
        known.pop(os.getpid(), None)
    if run is not None:
        _wait_exited(parent, int(run[19]))
        known.update(_orphans(int(run[2]), int(run[19]), parent))
    reap(known)


def start_watchdog() -> int | None:
    """Start the watchdog for this process (once); return its PID, None if not on Linux."""
    global _pipe_fd, _proc
    if _pipe_fd is not None or not os.path.isdir("/proc/self"):
        return None
    read_fd, write_fd = os.pipe()  # both non-inheritable: no later child holds them
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
            stdin=read_fd,
            close_fds=True,
        )
    finally:
        os.close(read_fd)
    _pipe_fd, _proc = write_fd, proc
    return proc.pid


if __name__ == "__main__":
    watch(int(sys.argv[1]))
