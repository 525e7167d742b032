"""Verification by what S3 guarantees, per engine, against moto server (scaled-down sizes).

Sizes are in units of 16 KiB standing for 1 MiB: parts of 8, 10 and 50 units stand for
aws-cli's 8 MiB, 10 MiB and s5cmd's 50 MiB parts; the ranged-download threshold is 16 units
as it is 16 MiB (``PREFECT_S3_TEST_LIMITS``; moto's 5 MiB part minimum is lowered).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from awscrt import checksums as crt
from conftest import S3Endpoint
from s3proxy import FaultProxy, KmsEtags, Reply, Request, Rule, S3Proxy

from prefect_s3_concurrency.runtime.caches import VERIFY_REQUESTS
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import open_engine
from prefect_s3_concurrency.s3.integrity import crc_b64
from prefect_s3_concurrency.s3.limits import TEST_ENV
from prefect_s3_concurrency.s3.transfer import (
    LocalFile,
    S3Object,
    download_objects,
    list_objects,
    upload_files,
)

UNIT = 16 * 1024
SCALED = f"multipart_threshold={16 * UNIT},default_part={8 * UNIT},min_part={5 * UNIT}"


@pytest.fixture(autouse=True)
def scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.s3.models

    monkeypatch.setenv(TEST_ENV, SCALED)
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)


def _plain_client(server):
    """A client that sends no checksums (an old aws-cli): moto then stores none."""
    return server.client(request_checksum_calculation="when_required")


def _multipart(client, bucket: str, key: str, body: bytes, part: int) -> None:
    up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = [
        {"PartNumber": n + 1, "ETag": client.upload_part(
            Bucket=bucket, Key=key, UploadId=up, PartNumber=n + 1, Body=body[s:s + part])["ETag"]}
        for n, s in enumerate(range(0, len(body), part))
    ]  # fmt: skip
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}
    )


def _download(endpoint: str, bucket: str, objs: list[S3Object], out: Path, **kw):
    engine = open_engine(S3Connection(endpoint_url=endpoint, max_attempts=1))
    out.mkdir(parents=True, exist_ok=True)
    items = [(o, str(out / o.key)) for o in objs]
    try:
        return download_objects(engine, bucket, items, root=str(out), **kw)
    finally:
        engine.close()


def _upload(endpoint: str, bucket: str, files: list[LocalFile], **kw):
    engine = open_engine(S3Connection(endpoint_url=endpoint, max_attempts=1))
    try:
        return upload_files(engine, bucket, files, **kw)
    finally:
        engine.close()


# (part units, object units): below and above the ranged threshold (16 units)
SHAPES = [(8, 10), (8, 24), (10, 21), (10, 15), (50, 60), (50, 12)]


def test_multipart_objects_of_any_part_size(s3_engine, moto_server, bucket_factory, tmp_path):
    """Valid objects of any part size download and are checked by their per-part MD5s
    (21 units in 10-unit parts has 3 parts, as 8-unit parts would); a flipped byte in every
    GET is never kept (10 units in two 8-unit parts was once accepted)."""
    bucket = bucket_factory(moto_server)
    client = _plain_client(moto_server)
    bodies, objs = {}, []
    for part, size in SHAPES:
        key = f"p{part}-s{size}.bin"
        bodies[key] = os.urandom(size * UNIT + 7)
        _multipart(client, bucket, key, bodies[key], part * UNIT)
    objs = list_objects(client, bucket, "")
    good = _download(moto_server.endpoint_url, bucket, objs, tmp_path / "good")
    assert (sorted(good.transferred), good.failed, good.size_only) == (sorted(bodies), {}, []), good
    for key, body in bodies.items():
        assert (tmp_path / "good" / key).read_bytes() == body
    with FaultProxy(moto_server.endpoint_url, fault_rate=1.0, kinds=["corrupt"]) as proxy:
        proxy.fault_methods = {"GET"}
        proxy.key_filter = lambda target: target.endswith(".bin")
        bad = _download(proxy.endpoint_url, bucket, objs, tmp_path / "bad")
        assert proxy.stats["corrupt"] >= len(objs)  # every object's bodies were corrupted
    assert sorted(bad.failed) == sorted(bodies) and not bad.transferred
    assert any("mismatch" in reason for reason in bad.failed.values()), bad.failed
    assert [p for p in (tmp_path / "bad").rglob("*") if p.is_file()] == []


def test_uploads_carry_crc64nvme_and_downloads_check_it(
    s3_engine, moto_server, bucket_factory, tmp_path
):
    """Single PUTs and multipart uploads (parts sized to fit) send the CRC64NVME S3 checks;
    S3 (moto) stores it as the full-object checksum, and downloads verify against it."""
    bucket = bucket_factory(moto_server)
    files = []
    for name, units in (("small.bin", 3), ("large.bin", 40)):
        path = tmp_path / "src" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(units * UNIT + 5))
        files.append(LocalFile(str(path), name, path.stat().st_size))
    result = _upload(moto_server.endpoint_url, bucket, files)
    assert (sorted(result.transferred), result.failed) == (["large.bin", "small.bin"], {})
    client = moto_server.client()
    for item in files if s3_engine == "boto3" else files[1:]:  # obstore: SigV4 payload hash
        head = client.head_object(Bucket=bucket, Key=item.key, ChecksumMode="ENABLED")
        expected = crc_b64("crc64nvme", crt.crc64nvme(Path(item.path).read_bytes()))
        assert head.get("ChecksumCRC64NVME") == expected, item.key
        assert head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    assert client.head_object(Bucket=bucket, Key="large.bin")["ETag"].endswith('-6"')  # 8-unit
    objs = list_objects(client, bucket, "")
    before = VERIFY_REQUESTS["head"]
    got = _download(moto_server.endpoint_url, bucket, objs, tmp_path / "out")
    assert (sorted(got.transferred), got.failed, got.size_only) == (
        ["large.bin", "small.bin"], {}, []
    )  # fmt: skip
    assert VERIFY_REQUESTS["head"] - before <= 1  # the large object's checksum HEAD only
    for item in files:
        assert (tmp_path / "out" / item.key).read_bytes() == Path(item.path).read_bytes()


def test_file_rewritten_during_upload_is_refused(
    s3_engine, moto_server, bucket_factory, tmp_path, monkeypatch
):
    """A file rewritten while its parts upload is not stored (the first large upload of a
    process once stored a torn mix); the multipart upload is aborted."""
    bucket = bucket_factory(moto_server)
    path = tmp_path / "torn.bin"
    path.write_bytes(os.urandom(40 * UNIT))
    engine = open_engine(S3Connection(endpoint_url=moto_server.endpoint_url, max_attempts=1))
    real = engine.client.upload_part

    def rewriting(**kwargs):
        if kwargs["PartNumber"] == 2:
            path.write_bytes(os.urandom(40 * UNIT))  # same size, new content
        return real(**kwargs)

    monkeypatch.setattr(engine.client, "upload_part", rewriting)
    try:
        result = upload_files(engine, bucket, [LocalFile(str(path), "torn.bin", 40 * UNIT)])
    finally:
        engine.close()
    assert "changed while uploading" in result.failed.get("torn.bin", ""), result
    client = moto_server.client()
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


class _IfMatchSeen(Rule):
    """Records each If-Match exactly as the client sent it, then drops it (moto's own ETag
    is lower case)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def on_request(self, req: Request) -> Reply | None:
        value = req.headers.get("If-Match")
        if value is not None:
            self.sent.append(value)
            req.headers.pop("If-Match")
        return None


def test_kms_bucket_round_trip_and_rerun_transfers_nothing(
    s3_engine, moto_server, bucket_factory, tmp_path
):
    bucket = bucket_factory(moto_server)
    src = tmp_path / "src"
    src.mkdir()
    files = []
    for name, units in (("a.txt", 1), ("b.bin", 40)):
        (src / name).write_bytes(os.urandom(units * UNIT + 3))
        files.append(LocalFile(str(src / name), name, (src / name).stat().st_size))
    plain = os.urandom(2 * UNIT)  # stored without any checksum: size only under KMS
    _plain_client(moto_server).put_object(Bucket=bucket, Key="plain.bin", Body=plain)
    with S3Proxy(moto_server.endpoint_url, [KmsEtags({bucket})]) as proxy:
        up = _upload(proxy.endpoint_url, bucket, files)
        assert (sorted(up.transferred), up.failed) == (["a.txt", "b.bin"], {}), up
        listed = list_objects(S3Endpoint(proxy.endpoint_url).client(), bucket, "")
        stored = {o.key: o.etag for o in listed}
        assert stored["a.txt"] != hashlib.md5(Path(files[0].path).read_bytes()).hexdigest()
        again = _upload(proxy.endpoint_url, bucket, files, existing={o.key: o for o in listed})
        assert (again.transferred, sorted(again.skipped)) == ([], ["a.txt", "b.bin"])
        down = _download(proxy.endpoint_url, bucket, listed, tmp_path / "out")
        assert (sorted(down.transferred), down.failed) == (["a.txt", "b.bin", "plain.bin"], {})
        # counted, not silently trusted: plain.bin has no stored checksum, nor has a.txt from
        # obstore's single PUT on moto (real S3 computes a CRC64NVME for every new object)
        assert down.size_only == (["a.txt"] if s3_engine == "obstore" else []) + ["plain.bin"]
        rerun = _download(proxy.endpoint_url, bucket, listed, tmp_path / "out")
        assert (rerun.transferred, len(rerun.skipped)) == ([], 3)
    for item in files:
        assert (tmp_path / "out" / item.key).read_bytes() == Path(item.path).read_bytes()
    assert (tmp_path / "out" / "plain.bin").read_bytes() == plain


def test_if_match_is_sent_exactly_as_received(s3_engine, moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    body = os.urandom(UNIT)
    moto_server.client().put_object(Bucket=bucket, Key="k.bin", Body=body)
    seen = _IfMatchSeen()
    with S3Proxy(moto_server.endpoint_url, [seen]) as proxy:
        listed = list_objects(moto_server.client(), bucket, "")
        upper = S3Object("k.bin", len(body), listed[0].etag.upper())
        result = _download(proxy.endpoint_url, bucket, [upper], tmp_path)
    assert result.failed == {} and seen.sent == [f'"{listed[0].etag.upper()}"']
    assert (tmp_path / "k.bin").read_bytes() == body


def test_summary_counts_objects_verified_by_size_only() -> None:
    from prefect_s3_concurrency.flows.common import TransferSummary

    summary = TransferSummary(direction="download", source="s", destination="d")
    summary.verified_by_size_only = ["a", "b"]
    rows = {r["item"]: r["value"] for r in summary.rows()}
    assert rows["verified by size only"] == 2


def test_archived_object_fails_alone(s3_engine, moto_server, bucket_factory, tmp_path):
    bucket = bucket_factory(moto_server)
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="cold.bin", Body=b"x" * 100, StorageClass="GLACIER")
    client.put_object(Bucket=bucket, Key="warm.bin", Body=b"y" * 100)
    objs = list_objects(client, bucket, "")
    result = _download(moto_server.endpoint_url, bucket, objs, tmp_path)
    assert result.transferred == ["warm.bin"]
    assert result.failed == {"cold.bin": "archived in GLACIER: restore it first"}
    assert result.permanent == ["cold.bin"]  # not retried
