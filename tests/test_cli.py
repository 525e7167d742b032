"""The flows' command line: parsing and a real run as a script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prefect_s3_concurrency.flows.cli import parse_flow_args
from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.tasks.client import S3Connection

ROOT = Path(__file__).resolve().parents[1]


def test_parse_download_args() -> None:
    flow_obj, kwargs = parse_flow_args(
        [download_prefix, upload_directory],
        ["download-prefix", "s3://bkt/p", "out", "--include", "*.csv", "--include", "*.txt",
         "--workers", "4", "--dry-run", "--endpoint-url", "http://127.0.0.1:9",
         "--max-attempts", "2"],
    )  # fmt: skip
    assert flow_obj is download_prefix
    assert kwargs == {
        "source": "s3://bkt/p", "dest_dir": "out", "include": ["*.csv", "*.txt"], "workers": 4,
        "batch_max_objects": 100, "batch_max_mib": 256, "skip_existing": True, "dry_run": True,
        "task_retries": 2, "delete_extra": False, "engine": "auto",
        "connection": S3Connection(endpoint_url="http://127.0.0.1:9", max_attempts=2),
    }  # fmt: skip


def test_missing_argument_exits() -> None:
    with pytest.raises(SystemExit):
        parse_flow_args([download_prefix], ["download-prefix", "s3://bkt/p"])


@pytest.mark.integration
def test_script_runs_and_errors_in_one_line(rclone_s3, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="in/x.txt", Body=b"hello")
    env = {**rclone_s3.env(), "PATH": "/usr/bin:/bin", "PREFECT_HOME": str(tmp_path / "ph"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
    script = [sys.executable, str(ROOT / "flows/transfer.py")]
    ok = subprocess.run(
        [*script, "--json", "download-prefix", f"s3://{bucket}/in", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert '"objects": 1' in ok.stdout and (tmp_path / "o/x.txt").read_bytes() == b"hello"
    bad = subprocess.run(
        [*script, "download-prefix", "s3://no-such-bucket-x/in", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert bad.returncode == 1
    expected = f"error: bucket 'no-such-bucket-x' does not exist at {rclone_s3.endpoint_url}"
    assert expected in bad.stderr.splitlines()


def test_cli_runs_without_heartbeats_unless_asked() -> None:
    from prefect.settings import get_current_settings

    from prefect_s3_concurrency.flows.cli import local_run_settings

    default = get_current_settings().flows.heartbeat_frequency
    with local_run_settings():
        assert get_current_settings().flows.heartbeat_frequency is None
    with local_run_settings(heartbeats=True):
        assert get_current_settings().flows.heartbeat_frequency == default
