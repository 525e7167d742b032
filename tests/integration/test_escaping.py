"""Keys never inject terminal sequences or line breaks into messages."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_s3_concurrency.cli.output import print_error, summary_table
from prefect_s3_concurrency.errors import (
    IntegrityError,
    describe_error,
    printable,
    run_failure_message,
)
from prefect_s3_concurrency.flows.common import keyed_rows
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix
from prefect_s3_concurrency.runtime.redact import install_log_redaction
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.records import BatchResult
from prefect_s3_concurrency.tasks.s3 import BatchFailed

HOSTILE = "p/\x1b[2J\x1b[31mred\r\nFAKE: all good\x07"
# moto's HTTP layer cannot take CR/LF in a key (404): the S3 runs use the rest of HOSTILE.
ON_S3 = "p/\x1b[2J\x1b[31mred\x07FAKE: all good"
REPO = Path(__file__).resolve().parents[2]


def _clean(text: str) -> bool:
    return not any(c in text for c in "\x1b\r\n\x07")


def test_printable_escapes_controls_only() -> None:
    assert printable("ünï cødé 日本 a\\b") == "ünï cødé 日本 a\\b"
    assert printable(HOSTILE) == "p/\\x1b[2J\\x1b[31mred\\r\\nFAKE: all good\\x07"


def test_messages_stay_one_line() -> None:
    err = IntegrityError(f"MD5 mismatch for {HOSTILE}")
    assert _clean(describe_error(err)) and "FAKE: all good" in describe_error(err)
    assert _clean(describe_error(OSError(f"cannot open {HOSTILE}")))
    assert _clean(run_failure_message("download", {HOSTILE: "x"}, {HOSTILE + "2": "y"}))
    result = BatchResult()
    result.fail(HOSTILE, err)
    assert _clean(str(BatchFailed(result))) and _clean(result.failed[HOSTILE])
    assert all(_clean(row["item"]) and _clean(str(row["value"])) for row in
               keyed_rows("failed", {HOSTILE: describe_error(err)}))  # fmt: skip


def test_any_log_record_is_defused(caplog: pytest.LogCaptureFixture) -> None:
    """A log call anywhere (botocore, a retry warning) cannot move the cursor or clear the
    screen: the record factory escapes control characters other than tab and newline."""
    install_log_redaction()
    with caplog.at_level(logging.WARNING, logger="some.library"):
        logging.getLogger("some.library").warning("retrying %s", "k\x1b[2Jx\ry")
    assert caplog.records[-1].getMessage() == "retrying k\\x1b[2Jx\\ry"


def test_one_escaping_for_messages_output_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The CLI's lines, its summary table and every log record escape as errors.printable."""
    text = "k\x1b[2J\ry\u2028z\udcff.txt"
    escaped = printable(text)
    assert escaped == "k\\x1b[2J\\ry\\u2028z\\xff.txt"
    err = io.StringIO()
    print_error(text, file=err)
    assert err.getvalue() == f"error: {escaped}\n"
    assert escaped in summary_table([{"item": text, "value": 1}])
    install_log_redaction()
    with caplog.at_level(logging.WARNING, logger="some.library"):
        logging.getLogger("some.library").warning("%s", text)
    assert caplog.records[-1].getMessage() == escaped


def test_hostile_key_in_a_failed_run(moto_server, bucket_factory, tmp_path) -> None:
    client = moto_server.client()
    bucket = bucket_factory(moto_server)
    client.put_object(Bucket=bucket, Key=ON_S3 + "\\x", Body=b"data")  # rejected: backslash
    state = download_prefix(
        f"s3://{bucket}/p", str(tmp_path), connection=S3Connection(
            endpoint_url=moto_server.endpoint_url), return_state=True,
    )  # fmt: skip
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed) and _clean(str(exc)), exc
    assert printable(ON_S3) in str(exc)


def test_cli_error_is_one_escaped_line(moto_server, bucket_factory, tmp_path) -> None:
    client = moto_server.client()
    bucket = bucket_factory(moto_server)
    client.put_object(Bucket=bucket, Key=ON_S3 + "\\x", Body=b"data")
    out = subprocess.run(
        [sys.executable, "flows/transfer.py", "cp", f"s3://{bucket}/p",
         str(tmp_path / "o"), "--endpoint-url", moto_server.endpoint_url],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and printable(ON_S3) in errors[0], out.stderr[-2000:]
    assert "\x1b" not in out.stderr and "\x1b" not in out.stdout
