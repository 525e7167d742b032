"""Unit tests of the verification pieces: the ETag type, S3's limits, CRCs and their combination."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from awscrt import checksums as crt

from prefect_s3_concurrency.errors import (
    ConfigurationError,
    IntegrityError,
    UnsupportedObjectError,
    is_permanent,
    refused_object,
)
from prefect_s3_concurrency.s3 import limits
from prefect_s3_concurrency.s3.etag import ETag, Kind
from prefect_s3_concurrency.s3.integrity import (
    CompositeChecksum,
    Hashes,
    StoredChecksum,
    combine_all,
    crc_b64,
    file_crc,
    part_crcs,
    part_md5s,
)

MIB, GIB, TIB = 2**20, 2**30, 2**40
MD5 = "9e107d9d372bb6826bd81d3542a419d6"


def test_etag_kinds_and_if_match_kept_exactly() -> None:
    assert ETag.parse(f'"{MD5}"').kind is Kind.MD5
    upper = ETag.parse(f'"{MD5.upper()}"')
    assert upper.md5 == MD5 and upper.header == f'"{MD5.upper()}"'  # sent back as received
    multi = ETag.parse(f'"{MD5}-3"')
    assert multi.kind is Kind.MULTIPART and multi.parts == 3 and multi.md5 is None
    kms = ETag.parse(f'"{MD5}"', {"x-amz-server-side-encryption": "aws:kms"})
    assert kms.kind is Kind.OPAQUE and kms.md5 is None and kms.encrypted
    dsse = ETag.parse(MD5, {"x-amz-server-side-encryption": "aws:kms:dsse"})
    ssec = ETag.parse(MD5, {"x-amz-server-side-encryption-customer-algorithm": "AES256"})
    assert dsse.md5 is None and ssec.md5 is None
    sse_s3 = ETag.parse(MD5, {"x-amz-server-side-encryption": "AES256"})
    assert sse_s3.md5 == MD5 and sse_s3.encrypted is False  # SSE-S3 ETags are MD5s
    for odd in ("", "abc", f"{MD5}-", f"{MD5}-x", f"{MD5}-0", f"{MD5[:-1]}g"):
        assert ETag.parse(odd).kind is Kind.OPAQUE, odd


@pytest.mark.parametrize(
    ("size", "part"),
    [
        (0, 8 * MIB),
        (16 * MIB, 8 * MIB),
        (10_000 * 8 * MIB, 8 * MIB),  # 78.1 GiB: exactly 10,000 parts
        (10_000 * 8 * MIB + 1, 16 * MIB),  # part 10,001 with 8 MiB parts: doubled
        (100 * GIB, 16 * MIB),
        (1 * TIB, 128 * MIB),
        (5 * TIB, 1 * GIB),
    ],
)
def test_part_size_fits_s3_limits(size: int, part: int) -> None:
    chosen = limits.part_size_for(size)
    assert chosen == part
    assert 5 * MIB <= chosen <= 5 * GIB and -(-size // chosen) <= 10_000


def test_part_size_refuses_more_than_s3_stores() -> None:
    with pytest.raises(ConfigurationError):
        limits.part_size_for(5 * TIB + 1)


def test_test_limits_scale_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.TEST_ENV, "max_parts=4,min_part=1024,default_part=1024")
    now = limits.current()
    assert now.max_parts == 4 and limits.part_size_for(5000, now) == 2048
    monkeypatch.setenv(limits.TEST_ENV, "max_parts=four")
    with pytest.raises(ConfigurationError):
        limits.current()


def test_crc_combined_per_range_equals_whole(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 17)
    whole = crt.crc64nvme(data)
    parts = []
    for start in range(0, len(data), MIB):
        hashes = Hashes()
        hashes.update(data[start : start + MIB])
        parts.append(hashes)
    assert combine_all("crc64nvme", parts) == whole
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_crc(path) == whole and file_crc(path, "crc32c") == crt.crc32c(data)
    assert crc_b64("crc64nvme", whole) == base64.b64encode(whole.to_bytes(8, "big")).decode()
    assert len(part_md5s(path, MIB)) == 4
    switched = Hashes()
    switched.use("crc32c")  # a GET's headers name the stored algorithm before the first block
    switched.update(data)
    assert (switched.algorithm, switched.crc) == ("crc32c", crt.crc32c(data))


def test_stored_checksum_from_headers() -> None:
    full = StoredChecksum.from_headers({"x-amz-checksum-crc64nvme": "AAAAAAAAAAE="})
    assert full is not None and full.matches(1) and not full.matches(2)
    composite = {"x-amz-checksum-crc32c": "AAAAAQ==-3", "x-amz-checksum-type": "COMPOSITE"}
    assert StoredChecksum.from_headers(composite) is None
    assert StoredChecksum.from_headers({"etag": "x"}) is None


def test_composite_checksum_of_part_crcs(tmp_path: Path) -> None:
    from s3proxy.checksums import composite  # the proxy's own implementation, as S3 does it

    data = os.urandom(2 * MIB + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    parts = [data[i : i + MIB] for i in range(0, len(data), MIB)]
    for algorithm, fn, width in (("crc32", crt.crc32, 4), ("crc64nvme", crt.crc64nvme, 8)):
        stored = composite(algorithm, [fn(p).to_bytes(width, "big") for p in parts])
        found = CompositeChecksum.from_headers({f"x-amz-checksum-{algorithm}": stored})
        assert found is not None and (found.algorithm, found.parts) == (algorithm, 3)
        assert found.matches(part_crcs(path, MIB, algorithm))
        assert not found.matches(part_crcs(path, 2 * MIB, algorithm))  # other part size
        flipped = bytearray(data)
        flipped[MIB + 1] ^= 1
        path.write_bytes(flipped)
        assert not found.matches(part_crcs(path, MIB, algorithm))
        path.write_bytes(data)
    assert CompositeChecksum.from_headers({"x-amz-checksum-crc32": "AAAAAQ=="}) is None


def test_refused_objects_fail_alone_with_one_line() -> None:
    from botocore.exceptions import ClientError

    archived = ClientError(
        {"Error": {"Code": "InvalidObjectState", "Message": "not valid for storage class"}},
        "GetObject",
    )
    err = refused_object(archived, "k", "DEEP_ARCHIVE")
    assert isinstance(err, UnsupportedObjectError) and is_permanent(err)
    assert str(err) == "archived in DEEP_ARCHIVE: restore it first"
    ssec = ClientError(
        {"Error": {"Code": "InvalidRequest", "Message": "The object was stored using a form "
                   "of Server Side Encryption. The correct parameters must be provided to "
                   "retrieve the object."}},
        "GetObject",
    )  # fmt: skip
    assert str(refused_object(ssec)) == "encrypted with a customer-provided key: not supported"
    assert refused_object(ValueError("boom")) is None
    named = "customer-data/encrypted/InvalidObjectState.bin"  # a key is not an error code
    assert refused_object(ValueError(f"GET {named}: reset"), named) is None
    assert refused_object(IntegrityError(f"checksum mismatch for {named}")) is None


def test_hashes_compute_only_what_decides() -> None:
    """A GET whose reply names a stored checksum hashes its CRC only; one whose ETag is the
    MD5 hashes the MD5 only, and its (absent) CRC matches nothing stored unread."""
    data = os.urandom(3000)
    crc_only, md5_only, both = Hashes(md5=True), Hashes(md5=True), Hashes(md5=True)
    crc_only.only("crc")
    md5_only.only("md5")
    for hashes in (crc_only, md5_only, both):
        hashes.update(data[:1000])
        hashes.update(data[1000:])
    assert crc_only.md5 is None and crc_only.crc == both.crc == crt.crc64nvme(data)
    assert md5_only.md5 == both.md5 and md5_only.algorithm == "" and md5_only.crc == 0
    late = Hashes(md5=True)
    late.update(b"x")
    late.only("md5")  # too late: both are kept
    assert late.algorithm == "crc64nvme" and late.md5 is not None
