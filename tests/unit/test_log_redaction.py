"""Log redaction is installed by each entry point (CLI, flow, process-pool worker), not by an
import: a process-pool worker's logs hold no signature."""

from __future__ import annotations

import subprocess
import sys

from worker_logs import log_signed_request

from prefect_s3_concurrency.flows.runners import fresh_process_pool
from prefect_s3_concurrency.runtime.redact import MASK

ENTRY = """
from prefect_s3_concurrency.runtime import redact
import prefect_s3_concurrency.s3.connection, prefect_s3_concurrency.flows.transfer
print(redact._installed is None)
from prefect_s3_concurrency.cli import main
main(["--version"])
print(redact._installed is not None)
"""


def test_the_cli_installs_redaction_and_imports_do_not() -> None:
    out = subprocess.run([sys.executable, "-c", ENTRY], capture_output=True, text=True, check=True)
    lines = out.stdout.split()
    assert lines[0] == "True" and lines[-1] == "True", out.stdout


def test_a_process_pool_worker_redacts_its_logs() -> None:
    """The worker's task imports nothing of the package: only the worker's start redacts."""
    with fresh_process_pool(1) as runner:
        messages = runner.submit(log_signed_request, {}).result()
    text = "\n".join(messages)
    assert "ListObjectsV2" in text and f"'Authorization': b'{MASK}'" in text
    assert "5d" * 32 not in text and "Credential=AKIDEXAMPLE" not in text
