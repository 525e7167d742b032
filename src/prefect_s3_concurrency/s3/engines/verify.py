"""Download verification by what S3 itself guarantees, in this order:

1. the full-object checksum S3 stores (CRC64NVME for every new object; CRC32C/CRC32 too),
   compared with the CRC computed while the bytes were written (combined per range);
2. the ETag's MD5, only when it really is one (single part, not SSE-KMS/SSE-C);
3. a composite CRC (boto3's and aws-cli's multipart uploads: the CRC of the parts' CRCs,
   also when the ETag is no MD5 as with SSE-KMS), or else the per-part MD5s of a multipart
   ETag, with the part size S3 reports (HeadObject ``PartNumber=1``), never guessed;
4. the size alone: the object counts as "verified by size only".

An engine that sees the GET's headers (boto3, ``ChecksumMode=ENABLED``) decides at once.
One that does not (obstore) checks an MD5-shaped ETag first, with no extra request; only
when that fails, or the ETag is not an MD5, one HEAD with ``ChecksumMode`` decides. Large
(ranged) downloads of non-MD5 ETags ask that HEAD first, to learn the checksum or the part
size before the ranges are cut. Every such HEAD is counted in ``runtime.caches.VERIFY_REQUESTS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from prefect_s3_concurrency.errors import IntegrityError
from prefect_s3_concurrency.s3.engines.base import Engine, ObjectInfo
from prefect_s3_concurrency.s3.etag import ETag, Kind
from prefect_s3_concurrency.s3.integrity import (
    CompositeChecksum,
    StoredChecksum,
    file_crc,
    file_md5,
    part_crcs,
    part_md5s,
)
from prefect_s3_concurrency.s3.records import S3Object

SIZE_ONLY = "size"
MAX_ALIGNED_RANGE = 64 * 2**20  # parts up to this size are fetched as one range each


@dataclass
class Landed:
    """What was computed while an object's bytes were written."""

    crc: int  # the CRC of ``algorithm`` of what landed
    md5: str | None = None  # whole-object MD5, when computed
    part_md5s: list[bytes] | None = None  # per-part MD5s, when the ranges were the parts
    headers: Mapping[str, str] | None = None  # the reply's headers, when the engine saw them
    part_size: int | None = None  # as S3 reported it
    algorithm: str = "crc64nvme"


@dataclass(frozen=True)
class RangePlan:
    """How to cut a ranged download: range size, per-part MD5s or not, what HEAD said."""

    range_size: int
    per_part: bool = False
    info: ObjectInfo | None = None
    part_size: int | None = None


async def learn_part_size(
    engine: Engine, bucket: str, obj: S3Object, count: int | None
) -> int | None:
    """The part size S3 used for a multipart object of ``count`` parts (HeadObject
    ``PartNumber=1``).

    None when the server does not say, or says something that does not fit the part count
    (of the ETag or the composite checksum) and the object's size (then only the size can
    be checked).
    """
    try:
        first = await engine.head_checked(bucket, obj.key, part_number=1)
    except ClientError:
        return None
    if first is None or count is None or first.parts not in (None, count):
        return None
    size = first.size
    fits = size > 0 and (count - 1) * size < obj.size <= count * size
    return size if fits and (count > 1 or size == obj.size) else None


async def plan_ranges(engine: Engine, bucket: str, obj: S3Object, default: int) -> RangePlan:
    """Decide the ranges of a large download (see the module docstring)."""
    if obj.tag.kind is Kind.MD5:
        return RangePlan(default)
    info = await engine.head_checked(bucket, obj.key)
    if info is None or info.checksum is not None or info.tag.parts is None:
        return RangePlan(default, info=info)
    part = await learn_part_size(engine, bucket, obj, info.tag.parts)
    if part is None:
        return RangePlan(default, info=info)
    aligned = part <= MAX_ALIGNED_RANGE
    return RangePlan(part if aligned else default, aligned, info, part)


async def settle(
    engine: Engine, bucket: str, obj: S3Object, landed: Landed, path: Callable[[], Path]
) -> str:
    """Verify a downloaded object; return how (an algorithm, ``md5``, ``multipart-md5`` or
    ``size``).

    Args:
        engine: The batch's engine (for the deciding HEAD, when one is needed).
        bucket: Source bucket.
        obj: The listed object (its size was checked already).
        landed: What was computed while the bytes were written.
        path: Where the written bytes can be read back (rarely needed).

    Raises:
        IntegrityError: On any mismatch.
    """
    if landed.headers is None:
        tag = obj.tag
        if tag.md5 is not None and landed.md5 == tag.md5:
            return "md5"
        info = await engine.head_checked(bucket, obj.key)
        if info is None or info.etag != obj.etag:
            raise IntegrityError(f"{obj.key} changed or vanished during the download")
        landed.headers = info.headers or {}
    return await _decide(engine, bucket, obj, landed, landed.headers, path)


async def _decide(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    landed: Landed,
    headers: Mapping[str, str],
    path: Callable[[], Path],
) -> str:
    stored = StoredChecksum.from_headers(headers)
    if stored is not None:
        value = landed.crc
        if stored.algorithm != landed.algorithm:  # rare: read the file back once
            value = await asyncio.to_thread(file_crc, path(), stored.algorithm)
        if not stored.matches(value):
            raise IntegrityError(f"checksum mismatch for {obj.key} ({stored.algorithm})")
        return stored.algorithm
    tag = ETag.parse(obj.etag, headers)
    if tag.md5 is not None:
        md5 = landed.md5 or await asyncio.to_thread(file_md5, path())
        if md5 != tag.md5:
            raise IntegrityError(f"MD5 mismatch for {obj.key}")
        return "md5"
    composite = CompositeChecksum.from_headers(headers)
    if composite is not None and await _composite_checked(
        engine, bucket, obj, landed, path, composite
    ):
        return f"{composite.algorithm}-composite"
    if tag.parts is None:
        return SIZE_ONLY
    md5s = landed.part_md5s
    if md5s is None:
        part = landed.part_size or await learn_part_size(engine, bucket, obj, tag.parts)
        if part is None:
            return SIZE_ONLY
        md5s = await asyncio.to_thread(part_md5s, path(), part)
    if not tag.matches_multipart(md5s):
        raise IntegrityError(f"checksum mismatch for {obj.key}")
    return "multipart-md5"


async def _composite_checked(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    landed: Landed,
    path: Callable[[], Path],
    composite: CompositeChecksum,
) -> bool:
    """Check the parts' CRCs against a composite checksum; False if the part size is unknown.

    Raises:
        IntegrityError: On a mismatch.
    """
    part = landed.part_size or await learn_part_size(engine, bucket, obj, composite.parts)
    if part is None:
        return False
    crcs = await asyncio.to_thread(part_crcs, path(), part, composite.algorithm)
    if not composite.matches(crcs):
        raise IntegrityError(f"checksum mismatch for {obj.key} ({composite.algorithm})")
    return True
