"""The Prefect API a command-line run reports to, and ``prefect-s3 server start|status|stop``.

With ``PREFECT_API_URL`` set (or a profile naming an API), runs report there. Without it, they
use the local server of :mod:`prefect_s3_concurrency.runtime.prefect_server`: the first
command starts it in the background (while it checks its arguments and S3), later commands
reuse it in milliseconds, and it stops by itself after ``PREFECT_S3_SERVER_IDLE_MINUTES``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Annotated

from cyclopts import App, Parameter

from prefect_s3_concurrency.cli.output import is_terminal, print_error, print_note
from prefect_s3_concurrency.runtime import prefect_server as local

KEEP_RUNS_HINT = (
    "start a server with 'prefect-s3 server start' (or 'prefect server start') and set "
    "PREFECT_API_URL to its API URL, or use 'prefect cloud login'"
)
FIRST_START = "starting a local Prefect server for the first time (~15 s)..."
START = "starting the local Prefect server (~5 s)..."


def configured_api_url() -> str | None:
    """The API URL from the environment or the active Prefect profile, if any."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _drain_logs_and_events() -> None:
    """Send the logs and events still queued in this process to the API."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a worker that never started has nothing queued
            worker.drain_all(timeout=5)


def _on_start(first_time: bool) -> None:
    print_note(FIRST_START if first_time else START)


class PrefectApi:
    """The API of one command-line run (a context manager).

    Call :meth:`start` early: when no API is configured it finds or starts the local server
    in a background thread. Entering waits for it (with a spinner on a terminal) and points
    this process's settings at it; leaving sends the run's logs and events.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self.started_server = False
        self.home: Path | None = None
        self._info: local.ServerInfo | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stack = contextlib.ExitStack()

    def start(self) -> PrefectApi:
        """Find the configured API, or find or start the local server, in the background."""
        self._thread = threading.Thread(target=self._find_or_start, name="prefect-api", daemon=True)
        self._thread.start()
        return self

    def _find_or_start(self) -> None:
        try:
            self.url = configured_api_url()
            if self.url:
                return
            self.home = local.prefect_home()
            self._info, self.started_server = local.ensure_server(self.home, on_start=_on_start)
        except BaseException as exc:  # noqa: BLE001 - re-raised by __enter__ in the main thread
            self._error = exc

    def _wait(self) -> None:
        assert self._thread is not None
        self._thread.join(0.2)
        if not self._thread.is_alive() or not is_terminal(sys.stderr):
            self._thread.join()
            return
        from rich.console import Console

        with Console(file=sys.stderr).status("waiting for the local Prefect server"):
            while self._thread.is_alive():
                self._thread.join(0.1)

    def __enter__(self) -> PrefectApi:
        if self._thread is None:
            return self
        self._wait()
        if self._error is not None:
            raise RuntimeError(f"no local Prefect server: {self._error}")
        if self._info is None:  # PREFECT_API_URL (or the profile) names the API
            return self
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.url = self._info.api_url
        if self.started_server:
            minutes = f"{local.idle_minutes():g}"
            print_note(
                f"local Prefect server ready: runs at {self._info.ui_url} (it stops after "
                f"{minutes} idle minutes, or with 'prefect-s3 server stop')"
            )
        self._stack.enter_context(local.in_use(self.home))
        self._stack.enter_context(temporary_settings(updates={PREFECT_API_URL: self.url}))
        self._stack.enter_context(local.settings_everywhere())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.url is not None:
            _drain_logs_and_events()
        self._stack.close()


server_app = App(
    name="server",
    help="The local Prefect server that commands use when PREFECT_API_URL is not set.\n\n"
    "The first command starts it in the background (127.0.0.1, state and log in "
    "$PREFECT_HOME/prefect-s3-server/); later commands reuse it, so their runs stay in its UI. "
    f"It stops by itself after {local.IDLE_ENV} minutes without use (default "
    f"{local.DEFAULT_IDLE_MINUTES:g}; 0 = never).",
)


def _api_url_note() -> None:
    url = configured_api_url()
    if url:
        print_note(f"PREFECT_API_URL is set ({url}): commands report there, not to this server")


@server_app.command
def start(
    *,
    idle_minutes: Annotated[
        float | None,
        Parameter(help=f"Stop after this many idle minutes (0 = never; default: {local.IDLE_ENV} "
                  f"or {local.DEFAULT_IDLE_MINUTES:g}).", metavar="MIN"),
    ] = None,
) -> int:  # fmt: skip
    """Start the local Prefect server (if it is not running) and print its URLs."""
    import os

    if idle_minutes is not None:
        os.environ[local.IDLE_ENV] = str(idle_minutes)
    try:
        info, _ = local.ensure_server(on_start=_on_start)
    except RuntimeError as exc:
        print_error(str(exc))
        return 1
    _print_info(info)
    _api_url_note()
    return 0


def _print_info(info: local.ServerInfo) -> None:
    print(f"local Prefect server running (pid {info.pid})")
    print(f"  UI       {info.ui_url}")
    print(f"  API      {info.api_url}")
    print(f"  log      {local.state_dir() / 'server.log'}")
    print(f"  use it from other Prefect tools: export PREFECT_API_URL={info.api_url}", flush=True)


@server_app.command
def status() -> int:
    """Print the local Prefect server's URLs; exit 1 if it is not running."""
    info = local.running_server()
    if info is None:
        print("no local Prefect server is running (the next command starts one)")
        _api_url_note()
        return 1
    _print_info(info)
    _api_url_note()
    return 0


@server_app.command
def stop() -> int:
    """Stop the local Prefect server (the next command starts it again)."""
    info = local.read_state()
    if local.stop_server():
        print(f"stopped the local Prefect server at {info.ui_url if info else '?'}")
    else:
        print("no local Prefect server was running")
    return 0
