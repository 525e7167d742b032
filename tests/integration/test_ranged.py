"""Large downloads as parallel ranged GETs, once per engine (conftest parametrises it).

Against ``rclone serve s3`` (answers a Range with 200 plus the range's ``Content-Range``:
taken as a partial reply), moto in server mode (206, multipart ETags) and moto behind a proxy
that drops ``Range`` (a server that ignores it: whole-object GETs from then on). Every request
goes through ``FaultProxy`` on 127.0.0.1, which counts the ranged ones and corrupts bodies
on demand; nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from prefect_aws import AwsCredentials

from prefect_s3_concurrency.errors import IntegrityError
from prefect_s3_concurrency.flows.transfer import download_prefix
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import base, open_engine, resolve_engine
from prefect_s3_concurrency.s3.engines.objects import download_one
from prefect_s3_concurrency.s3.engines.ranged import InOrderDigest, spans_of
from prefect_s3_concurrency.s3.etag import unquote
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.transfer import download_objects

MIB = 2**20
SIZE = 20 * MIB  # three 8 MiB ranges


@pytest.fixture(autouse=True)
def _forget_servers() -> Iterator[None]:
    """Each test learns its server's Range behaviour anew (it is cached per endpoint)."""
    caches.clear_all()
    yield
    caches.clear_all()


def _put(client, bucket: str, key: str, body: bytes, multipart: bool = False) -> S3Object:
    if multipart:
        up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = [
            {"PartNumber": n + 1, "ETag": client.upload_part(
                Bucket=bucket, Key=key, UploadId=up, PartNumber=n + 1, Body=body[s:e])["ETag"]}
            for n, (s, e) in enumerate(spans_of(len(body), 8 * MIB))
        ]  # fmt: skip
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}
        )
    else:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    etag = unquote(client.head_object(Bucket=bucket, Key=key)["ETag"])
    return S3Object(key, len(body), etag)


def _rclone(server, endpoint: str) -> S3Connection:
    """rclone's keys as a credentials block object, reaching it through ``endpoint``."""
    keys = AwsCredentials(aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key)  # fmt: skip
    return S3Connection(credentials=keys, endpoint_url=endpoint)


def _download(conn: S3Connection, bucket: str, obj: S3Object, target: Path) -> None:
    async def run() -> None:
        engine = open_engine(conn)
        try:
            await download_one(engine, bucket, obj, target, target.parent, (IntegrityError,))
        finally:
            await engine.aclose()

    target.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def test_in_order_digest_hashes_ranges_written_out_of_order(tmp_path: Path) -> None:
    body = os.urandom(5 * MIB + 123)
    spans = spans_of(len(body), MIB)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        digest = InOrderDigest(fd, spans)
        for index in reversed(range(len(spans))):  # last range first
            base.write_at(fd, body[spans[index][0] : spans[index][1]], spans[index][0])
            digest.done(index)
        assert digest.run() == hashlib.md5(body).hexdigest()
        stopped = InOrderDigest(fd, spans)
        stopped.done(0)
        stopped.stop()  # range 1 never arrives
        assert stopped.run() is None
    finally:
        os.close(fd)


def test_rclone_200_with_content_range_is_a_partial_reply(
    s3_engine, rclone_s3, bucket_factory, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    body = os.urandom(SIZE)
    obj = _put(rclone_s3.client(), bucket, "r/big.bin", body)
    assert len(obj.etag) == 32  # rclone: a whole-object MD5, hashed in order while it arrives
    with FaultProxy(rclone_s3.endpoint_url) as proxy:
        conn = _rclone(rclone_s3, proxy.endpoint_url)
        for run in range(2):
            proxy.reset_stats()
            _download(conn, bucket, obj, tmp_path / f"out{run}" / "big.bin")
            assert (tmp_path / f"out{run}" / "big.bin").read_bytes() == body
            # three ranges; obstore refuses rclone's first 200 once, then botocore reads them
            refused = 1 if run == 0 and resolve_engine("auto") == "obstore" else 0
            assert proxy.stats["ranged"] == 3 + refused
        assert proxy.endpoint_url not in caches.IGNORES_RANGE


def test_server_ignoring_range_is_read_whole(s3_engine, moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    body = os.urandom(SIZE)
    obj = _put(moto_server.client(), bucket, "r/big.bin", body)
    with FaultProxy(moto_server.endpoint_url) as proxy:
        proxy.drop_request_headers = {"range"}
        conn = S3Connection(endpoint_url=proxy.endpoint_url)
        _download(conn, bucket, obj, tmp_path / "a" / "big.bin")
        assert proxy.endpoint_url in caches.IGNORES_RANGE
        tried = proxy.stats["ranged"]
        assert 1 <= tried <= 2  # the first range only (once more through botocore for obstore)
        _download(conn, bucket, obj, tmp_path / "b" / "big.bin")
        assert proxy.stats["ranged"] == tried  # known now: one whole-object GET
    assert (tmp_path / "a" / "big.bin").read_bytes() == body
    assert (tmp_path / "b" / "big.bin").read_bytes() == body


@pytest.mark.parametrize("server", ["rclone", "moto-multipart"])
def test_corrupt_range_fails_and_leaves_nothing(
    server, s3_engine, rclone_s3, moto_server, bucket_factory, tmp_path
) -> None:
    s3 = rclone_s3 if server == "rclone" else moto_server
    bucket = bucket_factory(s3)
    obj = _put(s3.client(), bucket, "c/big.bin", os.urandom(SIZE), multipart=server != "rclone")
    assert obj.etag.endswith("-3") == (server != "rclone")  # per-part MD5s vs one in-order MD5
    with FaultProxy(s3.endpoint_url, fault_rate=1.0, kinds=["corrupt"]) as proxy:
        proxy.key_filter = lambda target: target.endswith("big.bin")
        proxy.fault_methods = {"GET"}  # bodies; a HEAD deciding a mismatch answers intact
        conn = S3Connection(endpoint_url=proxy.endpoint_url, max_attempts=1)
        if server == "rclone":
            conn = _rclone(rclone_s3, proxy.endpoint_url).model_copy(update={"max_attempts": 1})
        with pytest.raises(IntegrityError, match="mismatch for c/big.bin"):
            _download(conn, bucket, obj, tmp_path / "out" / "big.bin")
        assert proxy.stats["corrupt"] >= 3  # every attempt read ranges, and each was caught
        assert proxy.stats["ranged"] >= 3  # ... as ranged GETs, not one whole-object GET
    assert list((tmp_path / "out").iterdir()) == []  # no file, no temp file


def test_many_large_objects_at_once_in_one_batch(s3_engine, moto_server, bucket_factory, tmp_path):
    """More large objects in flight than the default thread pool has threads (a hasher
    thread per object must not starve the writes it waits for)."""
    bucket = bucket_factory(moto_server)
    client = moto_server.client()
    bodies = {f"m/o{i}.bin": os.urandom(16 * MIB + i) for i in range(8)}
    objs = [_put(client, bucket, key, body) for key, body in bodies.items()]
    assert all(len(o.etag) == 32 for o in objs)  # whole-object MD5s: in-order hashing
    out = tmp_path / "out"
    out.mkdir()
    items = [(o, str(out / o.key.split("/")[-1])) for o in objs]

    engine = open_engine(S3Connection(endpoint_url=moto_server.endpoint_url))
    try:
        result = download_objects(engine, bucket, items, root=str(out), in_flight=16)
    finally:
        engine.close()
    assert (sorted(result.transferred), result.failed) == (sorted(bodies), {})
    for key, body in bodies.items():
        assert (out / key.split("/")[-1]).read_bytes() == body


def test_flow_downloads_large_objects_by_ranges(
    s3_engine, rclone_s3, rclone_block, bucket_factory, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    bodies = {f"big{i}.bin": os.urandom(SIZE + i) for i in range(2)}
    for key, body in bodies.items():
        rclone_s3.client().put_object(Bucket=bucket, Key=f"f/{key}", Body=body)
    with FaultProxy(rclone_s3.endpoint_url) as proxy:
        conn = S3Connection(credentials_block=rclone_block, endpoint_url=proxy.endpoint_url)
        down = download_prefix(f"s3://{bucket}/f", str(tmp_path / "out"), workers=2,
                               connection=conn)  # fmt: skip
    assert (down.objects, down.failed) == (2, {})
    assert proxy.stats["ranged"] >= 6
    for key, body in bodies.items():
        assert (tmp_path / "out" / key).read_bytes() == body
