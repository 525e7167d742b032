"""A local Prefect server started once, reused by later runs, stopped when idle.

Without ``PREFECT_API_URL``, a run needs a Prefect API. Prefect's own answer, a temporary
server per process, costs every command seconds of start-up, gives up after 20 s (a first
start on a new ``PREFECT_HOME`` creates the database and may take longer), and its runs vanish
with it. Here the first run starts ``prefect server start`` on 127.0.0.1 in the background,
in a session of its own (a Ctrl-C in the terminal never reaches it), under a small
supervisor; later runs find it through a state file and reuse it, so their runs stay visible
in its UI. Everything lives in ``$PREFECT_HOME/prefect-s3-server/``: ``state.json`` (the
supervisor's PID, the port, the URL), ``server.log``, and two lock files:

- ``start.lock``: held while a server is started, so two commands never start two servers;
- ``in-use.lock``: every run holds it shared while it runs; the supervisor stops the server
  once nobody holds it and nothing used the server for ``PREFECT_S3_SERVER_IDLE_MINUTES``
  (default 30; 0 keeps it running until ``prefect-s3 server stop``).

This module runs as the supervisor too (``python -m ...prefect_server --home H --port P``),
so it imports nothing but the standard library at the top.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_s3_concurrency.runtime.processes import stop_process

IDLE_ENV = "PREFECT_S3_SERVER_IDLE_MINUTES"
DEFAULT_IDLE_MINUTES = 30.0
STARTUP_TIMEOUT = 300.0  # seconds; a first start creates the database, slow on a loaded machine
CHECK_SECONDS = 15.0  # how often the supervisor checks for idleness
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of the server
STATE_DIR = "prefect-s3-server"


@dataclass(frozen=True)
class ServerInfo:
    """A running local server: its supervisor's PID, its port, its API URL."""

    pid: int
    port: int
    started: float

    @property
    def api_url(self) -> str:
        """The API URL, e.g. ``http://127.0.0.1:4311/api``."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The UI's URL."""
        return f"http://127.0.0.1:{self.port}"


def prefect_home() -> Path:
    """``PREFECT_HOME`` as Prefect's settings see it (environment or profile)."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser()


def state_dir(home: Path | None = None) -> Path:
    """Where the local server keeps its state, log and locks."""
    return (home or prefect_home()) / STATE_DIR


def idle_minutes() -> float:
    """``PREFECT_S3_SERVER_IDLE_MINUTES`` (default 30; 0: never stop by itself)."""
    try:
        return max(0.0, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_MINUTES)))
    except ValueError:
        return DEFAULT_IDLE_MINUTES


def read_state(home: Path | None = None) -> ServerInfo | None:
    """The recorded server, if any (not checked)."""
    try:
        data = json.loads((state_dir(home) / "state.json").read_text())
        return ServerInfo(int(data["pid"]), int(data["port"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def healthy(info: ServerInfo, timeout: float = 2.0) -> bool:
    """True if the server answers its health check."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(f"{info.api_url}/health", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server(home: Path | None = None) -> ServerInfo | None:
    """The recorded server if it is alive and answers, else None."""
    info = read_state(home)
    return info if info is not None and _alive(info.pid) and healthy(info) else None


@contextlib.contextmanager
def _locked(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, mode)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_server(
    home: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
    on_start: Callable[[bool], None] | None = None,
) -> tuple[ServerInfo, bool]:
    """Return the running local server, starting it first if there is none.

    Args:
        home: ``PREFECT_HOME`` (default: Prefect's setting).
        timeout: Seconds to wait for a server being started (by this or another process).
        on_start: Called with ``first_time`` (no database yet) before a server is started.

    Returns:
        The server and whether this call started it.

    Raises:
        RuntimeError: If the server exits or does not answer within ``timeout``.
    """
    home = home or prefect_home()
    found = running_server(home)
    if found is not None:
        return found, False
    folder = state_dir(home)
    with _locked(folder / "start.lock"):
        found = running_server(home)
        if found is not None:
            return found, False
        stale = read_state(home)
        if stale is not None and _alive(stale.pid):  # alive but not answering: replace it
            stop_server(home)
        if on_start is not None:
            on_start(not (home / "prefect.db").exists())
        return _start(home, timeout), True


def _start(home: Path, timeout: float) -> ServerInfo:
    folder = state_dir(home)
    port = _free_port()
    args = [sys.executable, "-m", __name__, "--home", str(home), "--port", str(port),
            "--idle-minutes", str(idle_minutes())]  # fmt: skip
    with open(folder / "server.log", "ab") as log:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    info = ServerInfo(proc.pid, port, time.time())
    _write_state(folder, info)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the local Prefect server exited with code {proc.returncode} "
                f"(see {folder / 'server.log'})"
            )
        if healthy(info, timeout=1.0):
            return info
        time.sleep(0.1)
    stop_server(home)
    raise RuntimeError(
        f"the local Prefect server did not answer within {timeout:.0f} s "
        f"(see {folder / 'server.log'})"
    )


def _write_state(folder: Path, info: ServerInfo) -> None:
    tmp = folder / "state.json.tmp"
    tmp.write_text(json.dumps({"pid": info.pid, "port": info.port, "started": info.started}))
    os.replace(tmp, folder / "state.json")


def stop_server(home: Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the recorded server (its supervisor stops it); return whether one was running."""
    folder = state_dir(home)
    info = read_state(home)
    if info is None:
        return False
    was_running = _alive(info.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, signal.SIGTERM)  # the supervisor leads its own session
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # our own child when this process started it
    if _alive(info.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(info.pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (folder / "state.json").unlink()
    return was_running


@contextlib.contextmanager
def in_use(home: Path | None = None) -> Iterator[None]:
    """Mark the server as in use while the block runs (it is never stopped meanwhile)."""
    folder = state_dir(home)
    with _locked(folder / "in-use.lock", fcntl.LOCK_SH):
        (folder / "last-used").touch()
        try:
            yield
        finally:
            (folder / "last-used").touch()


def announce(first_time: bool) -> None:
    """Say on stderr that a server is being started (an ``on_start`` for :func:`ensure_server`)."""
    what = "for the first time (~15 s: it creates its database)" if first_time else "(~5 s)"
    print(f"note: starting a local Prefect server {what}...", file=sys.stderr, flush=True)


@contextlib.contextmanager
def local_prefect_server(
    home: Path | None = None, on_start: Callable[[bool], None] | None = announce
) -> Iterator[ServerInfo]:
    """Run the block against the local Prefect server, starting it if needed.

    For library use without ``PREFECT_API_URL``: flows called in the block report to a
    server that outlives the process (its UI keeps the runs), instead of Prefect's temporary
    server with its 20 s start-up limit. The server stops by itself once idle. Nothing is
    changed at import time: only the block runs against this server.

    Args:
        home: ``PREFECT_HOME`` (default: Prefect's setting).
        on_start: Called before a server is started (default: one line on stderr).

    Example::

        from prefect_s3_concurrency import download_prefix, local_prefect_server

        with local_prefect_server() as server:
            print("runs at", server.ui_url)
            download_prefix("s3://bucket/raw", "data/raw")
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    info, _ = ensure_server(home, on_start=on_start)
    with (
        in_use(home),
        temporary_settings(updates={PREFECT_API_URL: info.api_url}),
        settings_everywhere(),
    ):
        yield info


@contextlib.contextmanager
def settings_everywhere() -> Iterator[None]:
    """Make the current settings also those of threads that have no settings context.

    Such threads (the process pool's forwarding of its workers' logs and events, for one)
    would otherwise find no API URL and start a temporary server of their own, which
    outlives the run; ``prefect_test_harness`` does the same.
    """
    import prefect.context as context

    replace = getattr(context, "_temporary_global_settings_context", None)
    if replace is None:
        yield
        return
    with replace(context.get_settings_context()):
        yield


def _is_idle(folder: Path, started: float, idle_seconds: float) -> bool:
    """Nobody holds the in-use lock and nothing used the server for ``idle_seconds``."""
    try:
        last = max(started, (folder / "last-used").stat().st_mtime)
    except OSError:
        last = started
    if time.time() - last < idle_seconds:
        return False
    with open(folder / "in-use.lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
    return True


def supervise(home: Path, port: int, idle: float) -> int:
    """Run ``prefect server start`` on 127.0.0.1:``port``; stop it when idle or terminated."""
    folder = state_dir(home)
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url,
           "PREFECT_UI_API_URL": url, "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_SERVER_API_PORT": str(port)}  # fmt: skip
    child = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    stopping: list[str] = []

    def terminate(signum: int, frame: Any) -> None:
        stopping.append(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = next_check = time.time()
    while not stopping and child.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)  # a SIGTERM is seen within 0.5 s
        if idle and time.time() >= next_check and child.poll() is None:
            next_check = time.time() + min(CHECK_SECONDS, idle * 60 / 4)
            if _is_idle(folder, started, idle * 60):
                stopping.append(f"idle for {idle:g} min")
    print(f"prefect-s3 supervisor: stopping the server ({', '.join(stopping) or 'it exited'})")
    sys.stdout.flush()
    stop_process(child, STOP_GRACE)
    info = read_state(home)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (folder / "state.json").unlink()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Supervise a local Prefect server.")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle-minutes", type=float, default=DEFAULT_IDLE_MINUTES)
    ns = parser.parse_args()
    sys.exit(supervise(ns.home, ns.port, ns.idle_minutes))
