"""``prefect-s3`` runs against a real S3 server: outcomes, exit codes, errors, subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from prefect_s3_concurrency.cli import commands as cli

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def s3env(rclone_s3: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Credentials of the rclone server in the environment; returns ``--endpoint-url URL``."""
    for name, value in rclone_s3.env().items():
        monkeypatch.setenv(name, value)
    return ["--endpoint-url", rclone_s3.endpoint_url]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_cp_uploads_and_downloads_with_json(rclone_s3, bucket_factory, s3env, tmp_path, capsys):
    bucket = bucket_factory(rclone_s3)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(b"\x00" * 70_000)
    code, out, err = run(["cp", str(src), f"s3://{bucket}/copy", *s3env, "--json"], capsys)
    assert code == 0, err
    up = json.loads(out)
    assert (up["direction"], up["objects"], up["bytes"]) == ("upload", 2, 70_005)
    assert "━" not in err  # not a terminal: no progress bar
    code, out, err = run(["cp", f"s3://{bucket}/copy", str(tmp_path / "back"), *s3env], capsys)
    assert code == 0 and err == ""
    assert re.search(r"^objects transferred\s+2$", out, re.M), out
    assert (tmp_path / "back/sub/b.bin").read_bytes() == b"\x00" * 70_000


def test_failed_objects_exit_1_with_summary(rclone_s3, bucket_factory, s3env, tmp_path, capsys):
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    client.put_object(Bucket=bucket, Key="p/a.txt", Body=b"a")
    client.put_object(Bucket=bucket, Key="p/b.txt", Body=b"b")
    dest = tmp_path / "dest"
    (dest / "a.txt").mkdir(parents=True)  # a directory where a file should go
    code, out, err = run(["cp", f"s3://{bucket}/p", str(dest), *s3env, "--json"], capsys)
    assert code == 1
    summary = json.loads(out)
    assert list(summary["failed"]) == ["p/a.txt"] and summary["objects"] == 1
    assert error_lines(err) == [err.strip()] and "1 object(s) failed in download: p/a.txt" in err


def test_rejected_keys_exit_1(rclone_s3, bucket_factory, s3env, tmp_path, capsys) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    client.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"ok")
    client.put_object(Bucket=bucket, Key="p/bad\\name.txt", Body=b"x")
    code, out, err = run(["cp", f"s3://{bucket}/p", str(tmp_path / "d"), *s3env], capsys)
    assert code == 1 and (tmp_path / "d/ok.txt").read_bytes() == b"ok"
    assert "rejected: p/bad\\name.txt" in out
    assert error_lines(err) == [
        "error: 1 key(s) rejected in download: p/bad\\name.txt (all: backslash in key; "
        "--allow-rejected accepts them)"
    ]  # the run ends Failed after the rest is transferred
    code, _, err = run(["cp", f"s3://{bucket}/p", str(tmp_path / "e"), *s3env,
                        "--allow-rejected"], capsys)  # fmt: skip
    assert code == 1 and error_lines(err) == [
        "error: 1 key(s) rejected as unsafe, not transferred: p/bad\\name.txt"
    ]  # accepted by the flow, still not exit 0: something was not done


def test_bad_input_line_in_the_pipeline_exit_1(rclone_s3, bucket_factory, s3env, capsys):
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    client.put_object(Bucket=bucket, Key="in/good.txt", Body=b"3\n-4\n")
    client.put_object(Bucket=bucket, Key="in/bad.txt", Body=b"1\nnot a number\n")
    argv = ["square", f"s3://{bucket}/in", f"s3://{bucket}/out", *s3env, "--json"]
    code, out, err = run(argv, capsys)
    assert code == 1
    summary = json.loads(out)
    assert list(summary["failed"]) == ["in/bad.txt"] and summary["uploaded"] == 1
    assert error_lines(err) == [err.strip()] and "in/bad.txt" in err
    assert client.get_object(Bucket=bucket, Key="out/good.txt")["Body"].read() == b"9\n16\n"


def test_missing_bucket_and_block_exit_2(s3env, tmp_path, capsys) -> None:
    code, out, err = run(["cp", "s3://no-such-bucket-x/in", str(tmp_path), *s3env, "--json"],
                         capsys)  # fmt: skip
    assert code == 2 and json.loads(out)["exit_code"] == 2
    assert error_lines(err) == [err.strip()]
    assert err.strip().startswith("error: bucket 'no-such-bucket-x' does not exist at http://")
    code, _, err = run(["cp", "s3://bkt/in", str(tmp_path), "--credentials", "no-such-block"],
                       capsys)  # fmt: skip
    assert code == 2 and err.strip().startswith("error: no aws-credentials or ")


@pytest.mark.parametrize("via", ["option", "environment"])
def test_unreachable_endpoint_fails_fast_naming_it(tmp_path, capsys, monkeypatch, via) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        argv = ["cp", "s3://bkt/in", str(tmp_path)]
        if via == "option":
            argv += ["--endpoint-url", endpoint]
        else:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        start = time.monotonic()
        code, _, err = run(argv, capsys)
        seconds = time.monotonic() - start
    assert code == 2 and seconds < 10, seconds
    assert err.strip().startswith(f"error: cannot reach the S3 endpoint at {endpoint}: ")
    assert error_lines(err) == [err.strip()]


def _subprocess_env(rclone_s3: Any, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(rclone_s3.env(), PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra)
    return env


def test_flow_file_runs_as_the_command(rclone_s3, bucket_factory, tmp_path) -> None:
    from prefect.settings import get_current_settings

    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="in/x.txt", Body=b"hello")
    env = _subprocess_env(rclone_s3, tmp_path / "home",
                          PREFECT_API_URL=str(get_current_settings().api.url))  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(ROOT / "flows/transfer.py"), "--json", "cp", f"s3://{bucket}/in",
         str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        json.loads(proc.stdout)["objects"] == 1 and (tmp_path / "o/x.txt").read_bytes() == b"hello"
    )
    assert proc.stderr == ""


def test_local_s3_serves_a_directory_until_interrupted(tmp_path) -> None:
    proc = subprocess.Popen(
        [str(BIN / "prefect-s3"), "local-s3", str(tmp_path / "data"), "--bucket", "demo",
         "--bucket", "more"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("press Ctrl-C"):
                break
        env = dict(line.split()[1].split("=", 1) for line in lines if "export " in line)
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert any("rclone caches directory listings" in line for line in lines)
        client = boto3.client(
            "s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        names = sorted(b["Name"] for b in client.list_buckets()["Buckets"])
        assert names == ["demo", "more"]
        client.put_object(Bucket="demo", Key="k.txt", Body=b"v")
        assert (tmp_path / "data/demo/k.txt").read_bytes() == b"v"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in out + err
    assert err.strip() == "note: stopping the S3 server"


def test_square_on_worker_processes_without_a_prefect_server_is_quiet(
    rclone_s3, bucket_factory, local_prefect_home
) -> None:
    """Worker processes and the process pool's threads use the command's local server."""
    bucket = bucket_factory(rclone_s3)
    for i in range(4):
        rclone_s3.client().put_object(Bucket=bucket, Key=f"in/{i}.txt", Body=b"%d\n-3\n" % i)
    proc = subprocess.run(
        [str(BIN / "prefect-s3"), "square", f"s3://{bucket}/in", f"s3://{bucket}/out",
         "--min-process-mib", "0", "--min-chunk-mib", "0.000001", "--cpu-workers", "2", "--json"],
        env=_subprocess_env(rclone_s3, local_prefect_home), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = proc.stderr.splitlines()  # no temporary server, no worker log lines
    assert all(line.startswith("note: ") for line in notes) and len(notes) <= 2, notes
    summary = json.loads(proc.stdout)
    assert summary["used_processes"] and summary["uploaded"] == 4
    assert set(summary["worker_api_urls"]) == {summary["api_url"]}
    body = rclone_s3.client().get_object(Bucket=bucket, Key="out/3.txt")["Body"].read()
    assert body == b"9\n9\n"


def test_client_does_not_retry_until_the_endpoint_answered(monkeypatch) -> None:
    """The first listing of a closed endpoint fails at once (it took ~18 s of retries)."""
    from prefect_s3_concurrency.errors import S3AccessError
    from prefect_s3_concurrency.s3.connection import S3Connection, get_s3_client
    from prefect_s3_concurrency.s3.transfer import list_objects

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = get_s3_client(S3Connection(endpoint_url=endpoint, max_attempts=5))
        start = time.monotonic()
        with pytest.raises(S3AccessError, match=f"cannot reach the S3 endpoint at {endpoint}"):
            list_objects(client, "bkt", "p/")
        assert time.monotonic() - start < 2


def test_probe_names_an_unknown_host() -> None:
    from prefect_s3_concurrency.errors import S3AccessError
    from prefect_s3_concurrency.local.paths import parse_s3_url
    from prefect_s3_concurrency.s3.connection import S3Connection
    from prefect_s3_concurrency.s3.probe import probe

    conn = S3Connection(endpoint_url="http://no-such-host.invalid:9000", max_attempts=1)
    with pytest.raises(S3AccessError, match=r"^cannot reach the S3 endpoint at http://no-such-"):
        probe(conn, parse_s3_url("s3://bkt/p"))
