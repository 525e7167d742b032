"""First contact: the reused local Prefect server, signals, early errors, single objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_s3_concurrency.cli import commands as cli
from prefect_s3_concurrency.runtime import prefect_server as local

BIN = Path(sys.executable).parent


def cli_env(home: Path, s3: Any | None = None, **extra: str) -> dict[str, str]:
    """A command's environment without PREFECT_API_URL: it uses the local server of ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if s3 is not None:
        env.update(s3.env(), AWS_ENDPOINT_URL=s3.endpoint_url)
    env.update(extra)
    return env


def prefect_s3(*argv: str, env: dict[str, str], timeout: float = 240) -> Any:
    return subprocess.run([str(BIN / "prefect-s3"), *argv], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def flow_runs(info: local.ServerInfo, name: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"name": {"like_": name}}, "limit": 10}
    reply = httpx.post(f"{info.api_url}/flow_runs/filter", json=body, timeout=30)
    reply.raise_for_status()
    return list(reply.json())


def test_concurrent_first_commands_start_one_server(tmp_path, monkeypatch) -> None:
    """The start lock: two commands that find no server start one, the other waits for it."""
    started: list[int] = []
    info = local.ServerInfo(pid=os.getpid(), port=1, started=0.0)
    found: dict[str, local.ServerInfo] = {}

    def start(home: Path, timeout: float) -> local.ServerInfo:
        started.append(1)
        time.sleep(0.3)  # a server's start-up, during which the other command arrives
        found["server"] = info
        return info

    monkeypatch.setattr(local, "_start", start)
    monkeypatch.setattr(local, "running_server", lambda home=None: found.get("server"))
    barrier = threading.Barrier(2)
    results: list[tuple[local.ServerInfo, bool]] = []

    def command() -> None:
        barrier.wait()
        results.append(local.ensure_server(tmp_path))

    threads = [threading.Thread(target=command) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert started == [1]
    assert sorted(flag for _, flag in results) == [False, True]
    assert {server for server, _ in results} == {info}


def test_commands_reuse_the_local_server_and_name_their_runs(
    rclone_s3, bucket_factory, local_prefect_home, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_bytes(b"x" * (i + 1))
    env = cli_env(local_prefect_home, rclone_s3)
    up = prefect_s3("cp", str(src), f"s3://{bucket}/raw", env=env)
    assert up.returncode == 0, up.stderr[-2000:]
    info = local.running_server(local_prefect_home)
    assert info is not None, (local.read_state(local_prefect_home), up.stderr)
    down = prefect_s3("cp", f"s3://{bucket}/raw", str(tmp_path / "copy"), env=env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert down.stderr == ""  # found the running server: nothing to say
    assert local.read_state(local_prefect_home) == info  # the same server, not another
    status = prefect_s3("server", "status", env=env)
    assert status.returncode == 0 and info.ui_url in status.stdout
    (run,) = flow_runs(info, f"download s3://{bucket}/raw -> {tmp_path / 'copy'}")
    assert run["state"]["type"] == "COMPLETED"
    assert run["state"]["message"].startswith("3 objects, 0.0 MiB, ")
    (run,) = flow_runs(info, f"upload {src} -> s3://{bucket}/raw")
    assert run["state"]["message"].startswith("3 objects, ")


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [(signal.SIGINT, 130, "error: interrupted (Ctrl-C)"),
     (signal.SIGTERM, 143, "error: terminated (SIGTERM)")],
)  # fmt: skip
def test_a_signal_stops_a_running_copy_within_2_s(
    rclone_s3, bucket_factory, local_prefect_home, tmp_path, sig, code, line
) -> None:
    bucket = bucket_factory(rclone_s3)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2000):
        (src / f"{i:04d}.txt").write_bytes(b"%d" % i)
    client = rclone_s3.client()
    proc = subprocess.Popen(
        [str(BIN / "prefect-s3"), "cp", str(src), f"s3://{bucket}/in", "--workers", "1",
         "--requests-in-flight", "1", "--batch-max-objects", "20"],
        env=cli_env(local_prefect_home, rclone_s3), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.list_objects_v2(Bucket=bucket, Prefix="in/").get("KeyCount"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)  # polling S3: the copy has begun once a key is there
    sent = time.monotonic()
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C does: the whole process group
    proc.wait(timeout=30)
    seconds = time.monotonic() - sent
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == code and seconds < 2.0, (seconds, err)
    *notes, last = err.strip().splitlines()
    assert last == line and all(n.startswith("note: ") for n in notes), err  # a first start
    info = local.running_server(local_prefect_home)
    assert info is not None  # the server outlives the command's process group
    (run,) = flow_runs(info, f"upload {src} -> s3://{bucket}/in")
    assert run["state"]["type"] == "CRASHED"  # not left running


def test_local_mistakes_are_answered_before_prefect_starts(tmp_path) -> None:
    home = tmp_path / "home"
    (tmp_path / "file.txt").write_text("x")
    env = cli_env(home, AWS_ENDPOINT_URL="http://127.0.0.1:9")
    cases = [
        (["cp", str(tmp_path / "missing"), "s3://bkt/x"], f"error: SRC '{tmp_path}/missing' "
         "does not exist"),
        (["sync", str(tmp_path / "file.txt"), "s3://bkt/x"], f"error: SRC '{tmp_path}/file.txt' "
         "is a file, not a directory: sync copies directories (use cp for one file)"),
        (["cp", "s3://bkt/x", str(tmp_path / "file.txt")], f"error: DST '{tmp_path}/file.txt' "
         "is a file, not a directory"),
        (["cp", str(tmp_path / "file.txt"), "s3://bkt/x/other.txt"], "error: DST "
         "'s3://bkt/x/other.txt' names another object than 'file.txt': give the folder to upload "
         "into, ending in '/'"),
    ]  # fmt: skip
    for argv, expected in cases:
        proc = prefect_s3(*argv, env=env, timeout=60)
        assert (proc.returncode, proc.stderr.strip()) == (2, expected)
    assert not home.exists()  # no Prefect server was started, no database created


def test_single_object_and_file_copies(moto_server, bucket_factory, tmp_path, capsys) -> None:
    """cp s3://b/k DIR copies the object k when no key is under k/; cp FILE s3://b/x/."""
    bucket = bucket_factory(moto_server)  # moto: an object and keys under it may coexist
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="raw", Body=b"the object")
    client.put_object(Bucket=bucket, Key="dir/raw", Body=b"an object")
    client.put_object(Bucket=bucket, Key="dir/raw/inner.txt", Body=b"under raw/")
    (tmp_path / "f.txt").write_bytes(b"one file")
    conn = ["--endpoint-url", moto_server.endpoint_url, "--json"]

    assert cli.main(["cp", f"s3://{bucket}/raw", str(tmp_path / "a"), *conn]) == 0
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["raw"]
    assert (tmp_path / "a/raw").read_bytes() == b"the object"
    assert cli.main(["cp", f"s3://{bucket}/dir/raw", str(tmp_path / "b"), *conn]) == 0
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["inner.txt"]  # the folder wins
    assert cli.main(["cp", str(tmp_path / "f.txt"), f"s3://{bucket}/up/", *conn]) == 0
    assert client.get_object(Bucket=bucket, Key="up/f.txt")["Body"].read() == b"one file"
    capsys.readouterr()
    assert cli.main(["cp", "s3://no-such-bucket-fc/raw", str(tmp_path / "c"), *conn]) == 2
    assert json.loads(capsys.readouterr().out)["exit_code"] == 2
    assert not (tmp_path / "c").exists()  # nothing created for a source that is not there


def test_stop_and_status(local_prefect_home) -> None:
    env = cli_env(local_prefect_home)
    local.ensure_server(local_prefect_home)
    info = local.read_state(local_prefect_home)
    assert info is not None
    stop = prefect_s3("server", "stop", env=env)
    assert stop.returncode == 0 and stop.stdout.strip() == f"stopped the local Prefect server " \
        f"at {info.ui_url}"  # fmt: skip
    assert local.running_server(local_prefect_home) is None
    status = prefect_s3("server", "status", env=env)
    assert status.returncode == 1 and status.stdout.startswith("no local Prefect server")
