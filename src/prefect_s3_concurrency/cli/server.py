"""The Prefect API a command-line run reports to: the configured one, or a temporary server.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server (``SubprocessASGIServer``)
on first use and stops it at exit. Left alone, that server writes to the terminal: at
shutdown its background services are cancelled mid-write and log some 300 lines of
``database is locked`` / ``CancelledError`` tracebacks. Here the command starts the same
server (uvicorn with Prefect's app, as Prefect 3.9 does) itself, in a background thread while
it imports the flows and checks its arguments, with its output in
``$PREFECT_HOME/prefect-s3-server.log``. It drains the run's logs and events into it before
stopping it, like ``prefect.testing.utilities.prefect_test_harness``. The command's own
process never imports Prefect's server code (seconds of CPU).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

LOG_NAME = "prefect-s3-server.log"
STARTUP_TIMEOUT = 90  # seconds; a first start on a new PREFECT_HOME also creates the database
KEEP_RUNS_HINT = (
    "to keep runs visible in the UI, start a server with 'prefect server start' and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api, or use 'prefect cloud login'"
)


def configured_api_url() -> str | None:
    """The API URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _TemporaryServer:
    """Prefect's API server in a subprocess on a free 127.0.0.1 port, output to ``log``."""

    def __init__(self, log: IO[bytes]) -> None:
        self.port = _free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Start uvicorn as Prefect 3.9's ``SubprocessASGIServer`` does."""
        import prefect
        from prefect.settings import get_current_settings

        args = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parents[1]),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
            # Close connections left open (this process's API clients, the events websocket)
            # 1 s after SIGTERM, instead of waiting for them until the server is killed.
            "--timeout-graceful-shutdown", "1",
        ]  # fmt: skip
        settings = get_current_settings().to_environment_variables(exclude_unset=True)
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", **settings}  # fmt: skip
        self.process = subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_healthy(self, timeout: float, cancelled: threading.Event) -> None:
        """Wait until the health check answers; fail at once if the process exits."""
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline and not cancelled.is_set():
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with code {self.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.api_url}/health").status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"no answer from {self.api_url} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _drain_logs_and_events() -> None:
    """Send the logs and events still queued in this process to the API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a worker that never started has nothing queued
            worker.drain_all(timeout=5)


def _use_everywhere(stack: contextlib.ExitStack) -> None:
    """Make the current settings also those of threads that have no settings context.

    Such threads (e.g. the process pool's message forwarding) would otherwise find no API
    URL and start a temporary server of their own; ``prefect_test_harness`` does the same.
    """
    import prefect.context as context

    replace = getattr(context, "_temporary_global_settings_context", None)
    if replace is not None:
        stack.enter_context(replace(context.get_settings_context()))


class PrefectApi:
    """The API of one command-line run (a context manager).

    Call :meth:`start` early: when no API is configured it starts a temporary server in a
    background thread. Entering waits for it and points this process's settings at it;
    leaving drains the logs and stops the server.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self.temporary = False
        self.log_path: Path | None = None
        self.startup_seconds = 0.0
        self._server: _TemporaryServer | None = None
        self._log: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()  # guards _server against stop() while starting
        self._cancelled = threading.Event()
        self._stack = contextlib.ExitStack()

    def start(self) -> PrefectApi:
        """Use the configured API, or start a temporary server in the background."""
        self.url = configured_api_url()
        if self.url:
            return self
        from prefect.settings import get_current_settings

        self.temporary = True
        home = Path(get_current_settings().home).expanduser()
        home.mkdir(parents=True, exist_ok=True)
        self.log_path = home / LOG_NAME
        self._log = open(self.log_path, "wb")  # closed in stop()
        self._thread = threading.Thread(target=self._run_start, name="prefect-api", daemon=True)
        self._thread.start()
        return self

    def _run_start(self) -> None:
        began = time.perf_counter()
        try:
            with self._lock:
                if self._cancelled.is_set() or self._log is None:
                    return
                server = self._server = _TemporaryServer(self._log)
                server.start()
            server.wait_healthy(STARTUP_TIMEOUT, self._cancelled)
        except BaseException as exc:  # noqa: BLE001 - re-raised by __enter__ in the main thread
            self._error = exc
        self.startup_seconds = time.perf_counter() - began

    def __enter__(self) -> PrefectApi:
        if self._thread is None:
            return self
        self._thread.join()
        if self._error is not None or self._server is None:
            self.stop()
            raise RuntimeError(
                f"the temporary Prefect server did not start (see {self.log_path}): {self._error}"
            )
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.url = self._server.api_url
        self._stack.enter_context(temporary_settings(updates={PREFECT_API_URL: self.url}))
        _use_everywhere(self._stack)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None and self._error is None:
            _drain_logs_and_events()
        self._stack.close()
        self.stop()

    def stop(self) -> None:
        """Stop the temporary server, also while it is starting (idempotent)."""
        self._cancelled.set()
        with self._lock:
            server, self._server = self._server, None
            if server is not None:
                server.stop()
            if self._log is not None:
                self._log.close()
                self._log = None
