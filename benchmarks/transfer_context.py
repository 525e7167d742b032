"""Context managers of the transfer benchmark: Prefect API, WAN proxy, console, environment."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from benchmarks.transfer_tools import BenchmarkError


@contextlib.contextmanager
def prefect_api(use_env: bool) -> Iterator[str]:
    """A running Prefect API: a temporary one (default), or whatever the environment sets."""
    from prefect.settings import PREFECT_API_URL

    if use_env:
        yield PREFECT_API_URL.value() or "ephemeral"
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@contextlib.contextmanager
def wan_proxy(upstream_url: str, rtt_ms: float) -> Iterator[str]:
    """The S3 endpoint behind a delay-line proxy adding ``rtt_ms`` (0: the endpoint itself)."""
    if not rtt_ms:
        yield upstream_url
        return
    import subprocess
    import sys

    host_port = upstream_url.split("://", 1)[1].rstrip("/")
    cmd = [sys.executable, "-m", "benchmarks.delay_proxy", "--upstream", host_port,
           "--rtt-ms", str(rtt_ms)]  # fmt: skip
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("listening "):
            raise BenchmarkError(f"delay proxy did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def quiet_console(enabled: bool) -> Iterator[None]:
    """Raise the console handlers to WARNING (Prefect's API log handlers still get INFO)."""
    handlers = list(logging.getLogger().handlers) if enabled else []
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


@contextlib.contextmanager
def restored_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
