"""The flows against an S3 that behaves like Amazon's, on each engine.

``StrictS3`` in front of moto server: buckets with default SSE-KMS (ETags that are not the
MD5, ``x-amz-server-side-encryption: aws:kms``), one of them in eu-west-1 while the client
says us-east-1 (a request signed for the wrong region is refused as S3 refuses it), S3's
limits (parts, PUT size, DeleteObjects keys, a complete answered 200 with an error) and
checksums. Sizes are scaled down: 16 KiB stands for 1 MiB (``PREFECT_S3_TEST_LIMITS``, the
proxy's limits and moto's part minimum alike). Flows run in-process (Prefect test harness).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import S3Endpoint
from s3proxy import Counting, Faults, Reply, Request, Rule, S3Proxy, StrictS3

from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import open_engine
from prefect_s3_concurrency.s3.limits import TEST_ENV
from prefect_s3_concurrency.s3.records import BatchResult
from prefect_s3_concurrency.s3.transfer import download_objects, list_objects

UNIT = 16 * 1024  # stands for 1 MiB
MAX_PARTS = 4  # stands for 10,000
LIMITS = {  # the project's (limits.Limits fields) and the proxy's, scaled alike
    "multipart_threshold": 16 * UNIT, "default_part": 8 * UNIT, "min_part": 5 * UNIT,
    "max_part": 64 * UNIT, "max_put": 16 * UNIT, "max_parts": MAX_PARTS,
    "max_delete_keys": 2,  # stands for 1,000
}  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(300)
TREE = {
    "index.html": b"<!doctype html><title>t</title>\n",
    "data.json": b'{"a": 1}\n',
    "img/logo.png": PNG,
    "notes/read me.txt": b"plain text\n" * 50,
    # 40 units: 5 parts of the default 8 would break the 4-part limit; 16-unit parts fit
    "big.bin": os.urandom(40 * UNIT + 7),
}
CONTENT_TYPES = {"index.html": "text/html", "data.json": "application/json",
                 "img/logo.png": "image/png"}  # fmt: skip
TRANSFERS = ("put", "part", "get", "create_mpu", "complete", "delete", "delete_objects")


@pytest.fixture(autouse=True)
def scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.s3.models

    monkeypatch.setenv(TEST_ENV, ",".join(f"{k}={v}" for k, v in LIMITS.items()))
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", 1024)


@pytest.fixture
def strict(moto_server: S3Endpoint) -> Iterator[tuple[S3Proxy, StrictS3, dict]]:
    """The proxy, its StrictS3 rule and the buckets: ``kms`` (SSE-KMS, us-east-1) and
    ``both`` (SSE-KMS in eu-west-1); the client's region is us-east-1."""
    direct = moto_server.client()
    buckets = {k: f"{k}-{uuid.uuid4().hex[:12]}" for k in ("kms", "both")}
    for name in buckets.values():
        direct.create_bucket(Bucket=name)
    rule = StrictS3(
        kms_buckets={buckets["kms"], buckets["both"]},
        bucket_regions={buckets["both"]: "eu-west-1"},
        max_parts=MAX_PARTS, min_part_size=LIMITS["min_part"], max_part_size=LIMITS["max_part"],
        max_put_size=LIMITS["max_put"], max_delete_keys=LIMITS["max_delete_keys"],
    )  # fmt: skip
    with S3Proxy(moto_server.endpoint_url, [Counting(), _Refused(), rule]) as proxy:
        yield proxy, rule, buckets


class _Refused(Rule):
    """Records the S3 error code of every refused request."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def needs_body(self, req: Request, reply: Reply) -> bool:
        return reply.status >= 400

    def on_response(self, req: Request, reply: Reply) -> None:
        if reply.status >= 400:
            code = re.search(rb"<Code>([^<]*)</Code>", reply.body or b"")
            if code:
                self.codes.append(f"{req.op}:{code.group(1).decode()}")
            elif reply.made_by == "Regions":  # a HEAD's refusal carries no body, as on S3
                self.codes.append(f"{req.op}:AuthorizationHeaderMalformed")
            else:
                self.codes.append(f"{req.op}:{reply.status}")


def _conn(proxy: S3Proxy) -> S3Connection:
    return S3Connection(endpoint_url=proxy.endpoint_url, region="us-east-1")


def _write(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _transfers(counting: Counting) -> dict[str, int]:
    stats = counting.stats
    return {op: stats.get(op, 0) for op in TRANSFERS if stats.get(op, 0)}


def test_sync_round_trip_and_rerun_transfers_nothing(s3_engine, strict, tmp_path) -> None:
    """upload, download, then both again with delete_extra (sync), in an SSE-KMS bucket in
    eu-west-1: byte-exact, checked by S3's CRCs, content types set, S3's limits kept (4
    parts, 2 keys per DeleteObjects, a complete answered 200 with an error), and the
    re-runs send, fetch and delete nothing."""
    proxy, rule, buckets = strict
    counting, refused = proxy.rules[0], proxy.rules[1]
    bucket, conn = buckets["both"], _conn(proxy)
    eu = S3Endpoint(proxy.endpoint_url, region="eu-west-1").client()
    extra = [f"site/old/{i}.txt" for i in range(5)]  # sync deletes them: 3 DeleteObjects
    for key in extra:
        eu.put_object(Bucket=bucket, Key=key, Body=b"old")
    src, dest = tmp_path / "src", tmp_path / "dest"
    _write(src, TREE)
    _write(dest, {"stale.txt": b"not in the bucket"})
    url = f"s3://{bucket}/site"
    rule.complete_200.remaining = 1  # big.bin's complete: botocore retries it
    counting.reset()
    up = upload_directory(str(src), url, connection=conn, delete_extra=True, workers=4)
    assert (up.objects, up.failed, up.rejected) == (len(TREE), {}, {}), up
    assert sorted(up.deleted) == extra
    # 3 DeleteObjects of at most 2 keys reached S3 (a refused one, if any, signed for the
    # wrong region before the boto3 client learnt it, as botocore does)
    sent = counting["delete_objects"] - refused.codes.count(
        "delete_objects:AuthorizationHeaderMalformed"
    )
    assert (sent, rule.complete_200.sent) == (3, 1), refused.codes
    down = download_prefix(url, str(dest), connection=conn, delete_extra=True, workers=4)
    assert (down.objects, down.failed, down.deleted) == (len(TREE), {}, ["stale.txt"]), down
    assert _tree(dest) == TREE
    assert down.verified_by_size_only == []  # S3's CRC64NVME: the KMS ETags are no MD5s
    heads = {k: eu.head_object(Bucket=bucket, Key=f"site/{k}") for k in TREE}
    assert {k: heads[k]["ContentType"] for k in CONTENT_TYPES} == CONTENT_TYPES
    assert heads["big.bin"]["ETag"].endswith('-3"')  # 16-unit parts: 8 would need 6 > 4
    assert {h["ServerSideEncryption"] for h in heads.values()} == {"aws:kms"}
    # only wrong-region refusals: each new boto3 client learns the region from one (3 on a
    # quiet machine: list, list_uploads, delete_objects); under load a verifying HEAD may go
    # first, and the 4 workers' first requests may race the client's learning
    assert {c.split(":")[1] for c in refused.codes} <= {"AuthorizationHeaderMalformed"}
    assert len(refused.codes) <= 3 + 4, refused.codes
    refused.codes.clear()
    counting.reset()
    again_up = upload_directory(str(src), url, connection=conn, delete_extra=True, workers=4)
    again_down = download_prefix(url, str(dest), connection=conn, delete_extra=True, workers=4)
    assert (again_up.objects, again_up.skipped, again_up.deleted) == (0, len(TREE), [])
    assert (again_down.objects, again_down.skipped, again_down.deleted) == (0, len(TREE), [])
    assert _transfers(counting) == {}  # nothing sent, fetched or deleted again
    assert _tree(dest) == TREE
    assert refused.codes == []  # the region is known by now: nothing refused


def test_square_objects_kms_source_to_other_region(s3_engine, strict, tmp_path) -> None:
    """square-objects from an SSE-KMS bucket into an SSE-KMS bucket in eu-west-1: exact
    squares; the re-run resumes every output (its input's ETag recorded) and sends nothing."""
    proxy, rule, buckets = strict
    inputs = {f"in/{i}.txt": "".join(f"{n * (-1) ** i}\n" for n in range(i * 50)).encode()
              for i in range(1, 4)}  # fmt: skip
    client = S3Endpoint(proxy.endpoint_url).client()  # botocore follows the region's 400
    for key, body in inputs.items():
        client.put_object(Bucket=buckets["kms"], Key=key, Body=body)
    args = dict(
        source=f"s3://{buckets['kms']}/in", dest=f"s3://{buckets['both']}/out",
        connection=_conn(proxy), cpu_workers=1, min_process_mib=1024, scratch_dir=str(tmp_path),
    )  # fmt: skip
    summary = square_objects(**args)
    assert (summary.objects, summary.processed, summary.failed) == (3, 3, {}), summary
    proxy.rules[0].reset()
    again = square_objects(**args)
    assert (again.resumed, again.processed, again.failed) == (3, 0, {}), again
    assert _transfers(proxy.rules[0]) == {}
    for key, body in inputs.items():
        out = key.replace("in/", "out/", 1)
        got = client.get_object(Bucket=buckets["both"], Key=out)["Body"].read()
        assert got == b"".join(b"%d\n" % (int(n) ** 2) for n in body.split()), out


# (checksum sent, part units, object units): aws-cli's 8 and 10 MiB parts, s5cmd's 50, below and
# above the ranged-download threshold (16 units)
SHAPES = [("crc32", 8, 10), ("crc32", 10, 21), ("crc32", 50, 60), ("none", 10, 21)]


def _multipart_crc32(client, bucket: str, key: str, body: bytes, part: int) -> None:
    """Upload as s3transfer does (boto3, aws-cli): a COMPOSITE CRC32 of the parts' CRC32s."""
    args = {"Bucket": bucket, "Key": key}
    up = client.create_multipart_upload(**args, ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(body), part), 1):
        reply = client.upload_part(
            **args, UploadId=up, PartNumber=number, Body=body[start : start + part],
            ChecksumAlgorithm="CRC32",
        )  # fmt: skip
        parts.append(
            {"PartNumber": number, "ETag": reply["ETag"], "ChecksumCRC32": reply["ChecksumCRC32"]}
        )
    client.complete_multipart_upload(**args, UploadId=up, MultipartUpload={"Parts": parts})


def _download(endpoint: str, bucket: str, out: Path) -> BatchResult:
    engine = open_engine(S3Connection(endpoint_url=endpoint, region="us-east-1", max_attempts=1))
    out.mkdir(parents=True, exist_ok=True)
    try:
        objs = list_objects(engine.client, bucket, "")
        items = [(o, str(out / o.key)) for o in objs]
        return download_objects(engine, bucket, items, root=str(out))
    finally:
        engine.close()


def test_kms_multipart_objects_corrupted_in_flight_are_never_kept(
    s3_engine, strict, tmp_path
) -> None:
    """Multipart objects in an SSE-KMS bucket (ETags that are no MD5s), uploaded as boto3
    and aws-cli do (COMPOSITE CRC32) or as older clients did (no checksum: S3 adds its
    CRC64NVME): valid ones download checked, not by size; a flipped byte in every GET is
    never kept."""
    proxy, rule, buckets = strict
    bucket = buckets["kms"]
    client = S3Endpoint(proxy.endpoint_url).client()
    plain = S3Endpoint(proxy.endpoint_url).client(request_checksum_calculation="when_required")
    bodies = {}
    for style, part, size in SHAPES:
        key = f"{style}-p{part}-s{size}.bin"
        bodies[key] = os.urandom(size * UNIT + 7)
        upload = _multipart_crc32 if style == "crc32" else _multipart_plain
        upload(client if style == "crc32" else plain, bucket, key, bodies[key], part * UNIT)
    good = _download(proxy.endpoint_url, bucket, tmp_path / "good")
    assert (sorted(good.transferred), good.failed) == (sorted(bodies), {}), good.failed
    assert good.size_only == []  # the composite CRC32s are checked (once: size only)
    assert _tree(tmp_path / "good") == bodies
    faults = Faults(fault_rate=1.0, kinds=["corrupt"], key_filter=lambda t: t.endswith(".bin"))
    faults.fault_methods = {"GET"}
    proxy.rules = [*proxy.rules, faults]
    bad = _download(proxy.endpoint_url, bucket, tmp_path / "bad")
    assert faults.stats["corrupt"] >= len(bodies)
    assert (sorted(bad.failed), bad.transferred) == (sorted(bodies), []), bad
    assert _tree(tmp_path / "bad") == {}


def _multipart_plain(client, bucket: str, key: str, body: bytes, part: int) -> None:
    """Upload with no checksum at all (aws-cli before 2025)."""
    args = {"Bucket": bucket, "Key": key}
    up = client.create_multipart_upload(**args)["UploadId"]
    parts = [
        {"PartNumber": n, "ETag": client.upload_part(
            **args, UploadId=up, PartNumber=n, Body=body[s : s + part])["ETag"]}
        for n, s in enumerate(range(0, len(body), part), 1)
    ]  # fmt: skip
    client.complete_multipart_upload(**args, UploadId=up, MultipartUpload={"Parts": parts})
