"""Test helpers: a real Prefect server, ``prefect-s3 serve`` and workers in subprocesses.

Every process gets its own session (process group), so stopping it also stops the flow-run
subprocesses it started. Nothing sleeps to synchronise: readiness is polled with deadlines.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from prefect_s3_concurrency.s3.engine_registry import ENGINE_ENV

REPO = Path(__file__).resolve().parents[1]
SERVE_COMMAND = ("prefect-s3", "serve")  # what `make serve` runs
BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Call ``probe`` until it returns something truthy, or fail after ``timeout`` seconds.

    Raises:
        TimeoutError: Naming ``what`` and the last exception the probe raised, if any.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - report the last one on timeout
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s (last error: {last!r})")
        time.sleep(interval)


class ManagedProcess:
    """A subprocess in its own process group, logging to a file."""

    def __init__(
        self, args: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path = REPO
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.args, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def log_tail(self, limit: int = 4000) -> str:
        """The end of the process's output."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-limit:]
        except OSError:
            return ""

    def assert_alive(self) -> None:
        """Raise with the log tail if the process has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.args[:4]} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def wait(self, timeout: float) -> int:
        """Wait for a normal exit and return its code."""
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group, then SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # flow-run children may outlive their parent in the same group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without PREFECT_* settings (so nothing leaks in), plus ``extra``.

    The engine a test is parametrised with (``PREFECT_S3_ENGINE``) is kept: it is the
    test's own choice, and a child run without it would silently use the default engine.
    """
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == ENGINE_ENV
    }
    env.update(extra or {})
    return env


class PrefectServer:
    """``prefect server start`` on a free 127.0.0.1 port, with its own PREFECT_HOME."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.process: ManagedProcess | None = None
        self.startup_seconds = 0.0

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for this server and for every process that talks to it.

        The UI takes its API address from PREFECT_UI_API_URL (else PREFECT_API_URL, else
        PREFECT_SERVER_API_HOST/PORT), never from ``--port``: all of them point here.
        """
        settings = {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # SQLite waits this long for a lock before the API answers 503 (default 10 s:
            # on a loaded machine the UI's create_flow_run and log batches got 503s)
            "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
            "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
            # expired leases are revoked within 2 s (15 s by default): test_budget's SIGKILL
            # test waits for them
            "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        }
        return base_env({**settings, **(extra or {})})

    def healthy(self) -> bool:
        """True if ``/api/health`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 120) -> PrefectServer:
        """Start the server and wait until it is healthy; sets ``startup_seconds``."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)],
            self.env(), self.home / "server.log",
        )  # fmt: skip

        def ready() -> bool:
            assert self.process is not None
            self.process.assert_alive()
            return self.healthy()

        wait_for(ready, timeout, f"Prefect server on {self.url}")
        self.startup_seconds = time.monotonic() - self.process.started
        return self

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None:
            self.process.stop()

    def client(self) -> Any:
        """A synchronous Prefect client bound to this server (not to the ambient settings)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def run_cli(
        self, args: Sequence[str], extra_env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect <args>`` against this server from the repo root; raise on failure."""
        proc = subprocess.run(
            [str(BIN / "prefect"), *args], env=self.env({"PWD": str(REPO), **(extra_env or {})}),
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_deployments(
    server: PrefectServer,
    args: Sequence[str],
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """Start ``prefect-s3 serve <args>`` against ``server``."""
    return ManagedProcess(
        [str(BIN / SERVE_COMMAND[0]), *SERVE_COMMAND[1:], *args], server.env(extra_env), log_path
    )


def wait_for_deployment(
    server: PrefectServer, full_name: str, process: ManagedProcess, timeout: float = 90
) -> Any:
    """Poll until ``flow-name/deployment-name`` exists on ``server``; return it."""

    def probe() -> Any:
        process.assert_alive()
        with server.client() as client:
            return client.read_deployment_by_name(full_name)

    return wait_for(probe, timeout, f"deployment {full_name} to register")


def wait_for_final_state(server: PrefectServer, flow_run_id: Any, timeout: float = 180) -> Any:
    """Poll until the flow run is in a final state; return the flow run."""

    def probe() -> Any:
        with server.client() as client:
            run = client.read_flow_run(flow_run_id)
        return run if run.state is not None and run.state.is_final() else None

    return wait_for(probe, timeout, f"flow run {flow_run_id} to finish", interval=0.25)
