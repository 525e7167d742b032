"""No secret key, session token, Authorization header or signature in logs or artifacts.

Both flows run with DEBUG logging everywhere (boto3, botocore, s3transfer, urllib3 and
Prefect): once in this process, captured by caplog and by Prefect's API log handler, and
once as a script with ``PREFECT_LOGGING_LEVEL=DEBUG``/``PREFECT_LOGGING_ROOT_LEVEL=DEBUG``,
capturing its console output and every log the Prefect API stored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
from prefect.settings import PREFECT_API_URL
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect_aws import AwsCredentials
from prefect_processes import REPO, base_env
from reliability_helpers import flow_logs

from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.runtime.redact import MASK
from prefect_s3_concurrency.s3.connection import S3Connection

TOKEN = "FwoGZXIvYXdzEJr-session-TOKEN-" + uuid.uuid4().hex
LEAKS = [
    re.compile(r"Signature=[0-9a-f]{64}"),  # the SigV4 signature in an Authorization header
    re.compile(r"Signature:\s*[0-9a-f]{64}"),  # botocore.auth's debug line
    re.compile(r"AWS4-HMAC-SHA256 Credential="),  # an Authorization header value
]
HEADER = re.compile(r"(?i)(authorization|x-amz-security-token)['\"]?\s*:\s*b?['\"]?(.{0,10})")


def _assert_clean(text: str, secret: str, where: str) -> None:
    assert secret not in text, f"secret key in {where}"
    assert TOKEN not in text, f"session token in {where}"
    for pattern in LEAKS:
        match = pattern.search(text)
        assert match is None, f"{pattern.pattern} in {where}: {match and match.group(0)}"
    for match in HEADER.finditer(text):
        assert match.group(2).startswith(MASK), f"unmasked header in {where}: {match.group(0)}"


def _all_api_logs_since(start: datetime) -> str:
    async def read() -> list[str]:
        out: list[str] = []
        async with get_client() as client:
            while True:
                page = await client.read_logs(
                    log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=start)),
                    limit=200, offset=len(out),
                )  # fmt: skip
                out += [log.message for log in page]
                if len(page) < 200:
                    return out

    return "\n".join(run_coro_as_sync(read()))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "d" / "big.bin").write_bytes(os.urandom(17 * 2**20))  # s3transfer multipart
    return src


def test_debug_logs_in_process_hold_no_secrets(rclone_s3, bucket_factory, files, tmp_path, caplog):
    bucket = bucket_factory(rclone_s3)
    name = f"leak-{uuid.uuid4().hex[:8]}"
    AwsCredentials(
        aws_access_key_id=rclone_s3.access_key, aws_secret_access_key=rclone_s3.secret_key,
        aws_session_token=TOKEN, region_name=rclone_s3.region,
        aws_client_parameters={"endpoint_url": rclone_s3.endpoint_url},
    ).save(name)  # fmt: skip
    conn = S3Connection(credentials_block=name)
    caplog.set_level(logging.DEBUG)
    for logger in ("botocore", "boto3", "s3transfer", "urllib3", "prefect"):
        caplog.set_level(logging.DEBUG, logger=logger)
    up = upload_directory(str(files), f"s3://{bucket}/p", workers=2, connection=conn,
                          return_state=True)  # fmt: skip
    down = download_prefix(f"s3://{bucket}/p", str(tmp_path / "out"), workers=2,
                           connection=conn, return_state=True)  # fmt: skip
    assert up.is_completed() and down.is_completed()
    assert (tmp_path / "out/d/big.bin").read_bytes() == (files / "d/big.bin").read_bytes()

    text = "\n".join(
        [caplog.text, *(r.getMessage() for r in caplog.records)]
        + [m for s in (up, down) for m in flow_logs(s.state_details.flow_run_id)]
    )
    assert "Sending http request" in text and "CanonicalRequest" in text  # DEBUG was on
    assert MASK in text  # ... and the headers were logged, masked
    _assert_clean(text, rclone_s3.secret_key, "logs")
    for key in ("upload-summary", "download-summary"):
        _assert_clean(json.dumps(Artifact.get(key).data), rclone_s3.secret_key, key)


def test_debug_logs_of_a_script_run_hold_no_secrets(rclone_s3, bucket_factory, files, tmp_path):
    bucket = bucket_factory(rclone_s3)
    start = datetime.now(UTC)
    env = base_env({
        **rclone_s3.env(), "AWS_SESSION_TOKEN": TOKEN, "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOGGING_LEVEL": "DEBUG", "PREFECT_LOGGING_ROOT_LEVEL": "DEBUG",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "botocore,boto3,s3transfer,urllib3",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    })  # fmt: skip
    script = [sys.executable, str(REPO / "flows/transfer.py")]
    runs = [
        ["cp", str(files), f"s3://{bucket}/p", "--workers", "2", "--verbose"],
        ["cp", f"s3://{bucket}/p", str(tmp_path / "out"), "--workers", "2", "--verbose"],
    ]
    output = []
    for args in runs:
        proc = subprocess.run([*script, *args], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        output += [proc.stdout, proc.stderr]
    console = "\n".join(output)
    assert "Sending http request" in console and MASK in console  # botocore DEBUG was on
    _assert_clean(console, rclone_s3.secret_key, "console output")
    stored = _all_api_logs_since(start)
    assert "Sending http request" in stored  # botocore's records reached the API too
    _assert_clean(stored, rclone_s3.secret_key, "logs stored by the Prefect API")
