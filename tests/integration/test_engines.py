"""Engine-specific behaviour, once per engine (conftest parametrises ``s3_engine``).

moto in server mode (any non-botocore engine needs a real endpoint) and ``rclone serve s3``
on 127.0.0.1; nothing leaves loopback.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from reliability_helpers import plan_downloads

from prefect_s3_concurrency.errors import UnsafeKeyError
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix, upload_directory
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import batches_for, open_engine, resolve_engine
from prefect_s3_concurrency.s3.engines.objects import PART_CONCURRENCY
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.transfer import download_objects

MIB = 2**20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p.read_bytes()) for p in root.rglob("*")
            if p.is_file()}  # fmt: skip


def test_default_engine_follows_the_parametrised_one(s3_engine: str) -> None:
    assert resolve_engine("auto") == s3_engine


def test_client_pool_holds_the_threads_of_every_batch_at_once(s3_engine: str) -> None:
    """Every batch task running at once may have PART_CONCURRENCY ranged GETs or part uploads
    on its threads, all through the process's one client: a smaller pool discards a
    connection after each surplus request and opens a new one for the next."""
    engine = open_engine(S3Connection(endpoint_url="http://127.0.0.1:9"), s3_engine, 16)
    try:
        pool = engine.client.meta.config.max_pool_connections
    finally:
        engine.close()
    assert pool >= batches_for(s3_engine, 16) * PART_CONCURRENCY


def test_round_trip_large_and_odd_keys_on_moto_server(moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    src = tmp_path / "src"
    files = {"a/small.bin": os.urandom(70_000), "empty": b"", "tab\there.txt": b"tab",
             "big/b.bin": os.urandom(21 * MIB)}  # fmt: skip
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    up = upload_directory(str(src), f"s3://{bucket}/p", workers=2, connection=conn)
    assert (up.objects, up.skipped, up.failed) == (len(files), 0, {})
    etag = moto_server.client().head_object(Bucket=bucket, Key="p/big/b.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload of 8 MiB parts
    out = tmp_path / "out"
    down = download_prefix(f"s3://{bucket}/p", str(out), workers=2, connection=conn)
    assert (down.objects, down.failed) == (len(files), {})
    assert _tree(out) == {k: _sha(v) for k, v in files.items()}
    again = download_prefix(f"s3://{bucket}/p", str(out), workers=2, connection=conn)
    assert (again.objects, again.skipped) == (0, len(files))  # multipart ETag verified locally


def test_symlink_created_mid_run_is_not_followed(moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    moto_server.client().put_object(Bucket=bucket, Key="p/sub/f.txt", Body=b"payload")
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    dest.mkdir(), outside.mkdir()
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    engine = open_engine(conn, "auto")
    obj = S3Object("p/sub/f.txt", 7, hashlib.md5(b"payload").hexdigest())
    items, rejected = plan_downloads([obj], "p/", dest)  # planned while dest/sub is absent
    assert rejected == {} and items[0][1] == str(dest.resolve() / "sub" / "f.txt")
    (dest / "sub").symlink_to(outside, target_is_directory=True)  # the path changes
    try:
        result = download_objects(engine, bucket, items, root=str(dest.resolve()))
    finally:
        engine.close()
    assert list(result.failed) == ["p/sub/f.txt"] and "symlink" in result.failed["p/sub/f.txt"]
    assert list(outside.iterdir()) == []
    assert "p/sub/f.txt" in result.permanent  # not retried: UnsafeKeyError
    assert UnsafeKeyError.__name__  # the error type that made it permanent


def test_two_keys_one_file_through_symlink_are_rejected(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    (dest / "link").symlink_to(dest / "real", target_is_directory=True)
    objs = [S3Object("p/link/a.txt", 1, ""), S3Object("p/real/a.txt", 2, ""),
            S3Object("p/link/b.txt", 1, "")]  # fmt: skip
    items, rejected = plan_downloads(objs, "p/", dest)
    assert set(rejected) == {"p/link/a.txt"} and "same file" in rejected["p/link/a.txt"]
    assert [o.key for o, _ in items] == ["p/real/a.txt", "p/link/b.txt"]


def _open_uploads(endpoint, bucket: str) -> list[str]:
    return [u["Key"] for u in endpoint.client().list_multipart_uploads(Bucket=bucket)
            .get("Uploads", [])]  # fmt: skip


def test_lost_create_multipart_reply_leaves_no_open_upload(moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    src = tmp_path / "src"
    src.mkdir()
    body = os.urandom(17 * MIB)
    (src / "big.bin").write_bytes(body)
    seen: list[str] = []

    def first_request_only(target: str) -> bool:  # the CreateMultipartUpload of big.bin
        seen.append(target)
        return target.endswith("/big.bin") and seen.count(target) == 1

    with FaultProxy(moto_server.endpoint_url, fault_rate=1.0, kinds=("reset",),
                    key_filter=first_request_only) as proxy:  # fmt: skip
        conn = S3Connection(endpoint_url=proxy.endpoint_url)
        up = upload_directory(str(src), f"s3://{bucket}/m", workers=1, connection=conn)
        assert proxy.stats["reset"] == 1  # the server made an upload whose reply was lost
    assert (up.objects, up.failed) == (1, {})
    assert _open_uploads(moto_server, bucket) == []
    got = moto_server.client().get_object(Bucket=bucket, Key="m/big.bin")["Body"].read()
    assert _sha(got) == _sha(body)


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_counts_are_exact_after_a_batch_retry(direction, moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    files = {f"f{i:02d}.txt": f"body {i}".encode() for i in range(12)}
    src = tmp_path / "src"
    src.mkdir()
    for rel, body in files.items():
        (src / rel).write_bytes(body)
        if direction == "download":
            moto_server.client().put_object(Bucket=bucket, Key=f"c/{rel}", Body=body)
    with FaultProxy(moto_server.endpoint_url) as proxy:
        proxy.always_fail_keys, proxy.always_fail_kind = {f"{bucket}/c/f05.txt"}, "403"
        conn = S3Connection(endpoint_url=proxy.endpoint_url, max_attempts=1)
        if direction == "upload":
            state = upload_directory(str(src), f"s3://{bucket}/c", workers=1, task_retries=2,
                                     connection=conn, return_state=True)  # fmt: skip
        else:
            state = download_prefix(f"s3://{bucket}/c", str(tmp_path / "out"), workers=1,
                                    task_retries=2, connection=conn, return_state=True)  # fmt: skip
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed)
    summary = exc.summary
    assert list(summary.failed) == ["c/f05.txt"]
    assert (summary.objects, summary.skipped) == (11, 0)  # not "skipped (already identical)"
    assert summary.bytes == sum(len(b) for k, b in files.items() if k != "f05.txt")
