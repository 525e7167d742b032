"""The Prefect API a command-line run reports to: the configured one, or a temporary server.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server (``SubprocessASGIServer``)
on first use and stops it at exit. Left alone, that server writes to the terminal: at
shutdown its background services are cancelled mid-write and log some 300 lines of
``database is locked`` / ``CancelledError`` tracebacks. Here the command starts the same
server itself, in the background while it imports the flows and checks its arguments, with
its output in ``$PREFECT_HOME/prefect-s3-server.log``; it drains the run's logs and events
into it before stopping it, like ``prefect.testing.utilities.prefect_test_harness``.
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
from typing import IO, Any

from prefect.server.api.server import SubprocessASGIServer

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


class _LoggedServer(SubprocessASGIServer):
    """Prefect's temporary API server, with its output in a log file instead of the terminal."""

    log: IO[bytes] | None = None

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        """Start uvicorn as ``SubprocessASGIServer`` does (Prefect 3.9), output to a file."""
        import prefect
        from prefect.settings import get_current_settings

        server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                      "PREFECT__SERVER_FINAL": "1"}  # fmt: skip
        args = [
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
            "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
            # Close connections left open (this process's API clients, the events websocket)
            # 1 s after SIGTERM, rather than wait for them until stop() kills the server (5 s).
            "--timeout-graceful-shutdown", "1",
        ]  # fmt: skip
        env = {**os.environ, **server_env,
               **get_current_settings().to_environment_variables(exclude_unset=True)}  # fmt: skip
        return subprocess.Popen(
            args, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_and_wait(server: _LoggedServer, timeout: float) -> None:
    """Start the server process and wait until its health check answers.

    Unlike ``SubprocessASGIServer.start``, a server process that exits fails at once.
    """
    import httpx

    server.running = True
    process = server.server_process = server._run_uvicorn_command()
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server process exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{server.api_url}/health").status_code == 200:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"no answer from {server.api_url} within {timeout} s")


def _drain_logs_and_events() -> None:
    """Send the logs and events still queued in this process to the API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a worker that never started has nothing queued
            worker.drain_all(timeout=5)


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
        self._server: _LoggedServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
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
        self._server = _LoggedServer(_free_port())
        self._server.log = open(self.log_path, "wb")  # closed in stop()
        self._thread = threading.Thread(target=self._run_start, name="prefect-api", daemon=True)
        self._thread.start()
        return self

    def _run_start(self) -> None:
        assert self._server is not None
        began = time.perf_counter()
        try:
            _start_and_wait(self._server, STARTUP_TIMEOUT)
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
        # Code that runs outside this settings context (e.g. the process pool's message
        # forwarding thread) finds no API URL and asks for Prefect's default temporary server:
        # make that this one, as prefect_test_harness does, rather than start a second one.
        if SubprocessASGIServer._instances.setdefault(None, self._server) is self._server:
            self._stack.callback(SubprocessASGIServer._instances.pop, None, None)
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
        """Stop the temporary server, if one was started (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            self._thread.join(timeout=1)  # interrupted while starting: stop it regardless
        server.stop()
        if server.log is not None:
            server.log.close()
