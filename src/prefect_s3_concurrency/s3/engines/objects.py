"""One object at a time, written once for every engine: verify, write atomically, retry.

Downloads go to a locked temp file created through :mod:`local.safe_write` (no symlink on
the way is followed, at write time), hashed while they stream (CRC64NVME, and the MD5s the
ETag needs), verified by :mod:`s3.engines.verify`, given the object's LastModified as
mtime (so that a re-run recognises them by size and time) and renamed into place. Objects
from the multipart threshold on are fetched as parallel ranged GETs written at their
offsets and hashed on worker threads (:mod:`s3.engines.ranged`); a server that answers a
Range with the whole object is detected on the first part and read in one streamed GET
instead, from then on (``rclone serve s3``'s 200 that carries just the range and its
``Content-Range`` is taken as the partial reply it is).

Uploads send small files in one PUT and large ones as multipart uploads of the part size
that fits S3's 10,000 parts (:mod:`s3.limits`), with checksums S3 verifies before it stores
anything (:mod:`s3.engines.checksummed`); a file that changes while it uploads is refused
before the upload completes. After every multipart upload, failed or not, uploads of
that key which were not open before it started (a failed upload, or one that a
``CreateMultipartUpload`` retried after its reply was lost left behind) are aborted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from awscrt import checksums as crt

from prefect_s3_concurrency.errors import (
    IntegrityError,
    describe_error,
    local_io_error,
    refused_object,
)
from prefect_s3_concurrency.local.safe_write import PartialFile, open_partial_at
from prefect_s3_concurrency.s3 import limits
from prefect_s3_concurrency.s3.engines.base import Engine, PutReply, RangeNotSupported, write_at
from prefect_s3_concurrency.s3.engines.ranged import ranges_into
from prefect_s3_concurrency.s3.engines.verify import Landed, plan_ranges, settle
from prefect_s3_concurrency.s3.etag import ETag
from prefect_s3_concurrency.s3.integrity import Hashes, StoredChecksum, file_md5, multipart_etag
from prefect_s3_concurrency.s3.pacing import backoff_delay
from prefect_s3_concurrency.s3.records import LocalFile, S3Object

MIB = 2**20
MULTIPART_THRESHOLD = limits.S3_LIMITS.multipart_threshold
PART_SIZE = limits.S3_LIMITS.default_part
PART_CONCURRENCY = 8  # ranged GETs / part PUTs in flight per large object
BODY_ATTEMPTS = 3
log = logging.getLogger("prefect_s3_concurrency.s3.transfer")


async def _streamed(engine: Engine, bucket: str, obj: S3Object, part: PartialFile) -> str:
    """One GET of the whole object into ``part``, hashed as it lands; verify it."""
    hashes = Hashes(md5=obj.tag.md5 is not None)
    headers: dict[str, str] = {}

    def reply(got: Mapping[str, str]) -> None:  # before the first block: hash what decides
        headers.update(got)
        stored = StoredChecksum.from_headers(got)
        if stored is not None:  # the stored checksum decides (verify._decide): its CRC only
            hashes.use(stored.algorithm)
            hashes.only("crc")
        elif got and ETag.parse(obj.etag, got).md5 is not None:  # the MD5 decides: no CRC
            hashes.only("md5")

    size = 0
    if_match = obj.tag.header if obj.etag else None
    async for block in engine.get(bucket, obj.key, if_match=if_match, on_reply=reply):
        size += write_at(part.fd, block, size, hashes)
    if size != obj.size:
        raise IntegrityError(f"size mismatch for {obj.key}: got {size}, expected {obj.size}")
    landed = Landed(hashes.crc, hashes.md5, headers=headers or None, algorithm=hashes.algorithm)
    return await settle(engine, bucket, obj, landed, lambda: _written(part))


async def _ranged(engine: Engine, bucket: str, obj: S3Object, part: PartialFile) -> str:
    """Parallel ranged GETs into ``part`` (cut as :func:`verify.plan_ranges` says); verify."""
    plan = await plan_ranges(engine, bucket, obj, limits.current().default_part)
    landed = await ranges_into(
        engine, bucket, obj, part.fd, plan.range_size, PART_CONCURRENCY, plan.per_part
    )
    landed.headers = plan.info.headers if plan.info is not None else None
    landed.part_size = plan.part_size
    return await settle(engine, bucket, obj, landed, lambda: _written(part))


def _written(part: PartialFile) -> Path:
    """The written temp file, through its fd (wherever its name went)."""
    path = Path(f"/proc/self/fd/{part.fd}")
    return path if path.exists() else part.path


async def _download_once(
    engine: Engine, bucket: str, obj: S3Object, target: Path, root: Path
) -> str:
    with open_partial_at(root, target) as part:
        if obj.size >= limits.current().multipart_threshold and engine.ranges_ok:
            try:
                how = await _ranged(engine, bucket, obj, part)
            except RangeNotSupported:
                os.ftruncate(part.fd, 0)
                how = await _streamed(engine, bucket, obj, part)
        else:
            how = await _streamed(engine, bucket, obj, part)
        if obj.last_modified is not None:  # a re-run knows it by size and time (aws-cli's)
            os.utime(part.fd, (obj.last_modified, obj.last_modified))
        part.commit()  # still locked: no clean-up can take it meanwhile
    return how


async def download_one(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    target: Path,
    root: Path | None,
    retryable: tuple[type[BaseException], ...],
) -> str:
    """Download one object atomically and verify it, re-fetching a bad body (see module).

    Args:
        engine: The batch's engine.
        bucket: Source bucket.
        obj: The listed object (size and ETag are checked).
        target: Final path, under ``root``.
        root: Directory every component is opened from without following symlinks;
            ``target``'s parent if None.
        retryable: Errors for which the body is fetched again (up to BODY_ATTEMPTS in all).

    Returns:
        How it was verified: a checksum algorithm, ``md5``, ``multipart-md5``, or ``size``.

    Raises:
        IntegrityError: If size or checksum still do not match after the last attempt.
        LocalIOError: If the destination is full or not writable.
        UnsafeKeyError: If a symlink appeared on the path.
    """
    base = root or target.parent
    if root is None:
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise local_io_error(exc, target) from None
    for attempt in range(1, BODY_ATTEMPTS + 1):
        try:
            return await _download_once(engine, bucket, obj, target, base)
        except OSError as exc:
            raise local_io_error(exc, target) from None
        except Exception as exc:
            refusal = refused_object(exc, obj.key, obj.storage_class)
            if refusal is not None:
                raise refusal from None
            if not isinstance(exc, retryable) or attempt == BODY_ATTEMPTS:
                raise
            log.warning(
                "retrying %s (attempt %d/%d) after %s",
                obj.key, attempt + 1, BODY_ATTEMPTS, describe_error(exc),
            )  # fmt: skip
            await asyncio.sleep(backoff_delay(attempt + 1))
    raise AssertionError("unreachable")


def _open_uploads(engine: Engine, bucket: str, key: str) -> set[str] | None:
    """Upload ids of the open multipart uploads of exactly ``key`` (None: not listable)."""
    try:
        resp = engine.client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    except Exception:  # noqa: BLE001 - a server without ListMultipartUploads
        return None
    return {u["UploadId"] for u in resp.get("Uploads", []) if u.get("Key") == key}


async def sweep_uploads(engine: Engine, bucket: str, key: str, before: set[str] | None) -> int:
    """Abort the open multipart uploads of ``key`` that were not open ``before`` this upload.

    Those are this run's: a failed upload, or one a retried ``CreateMultipartUpload``
    started after the reply to the first was lost. Returns how many were aborted.
    """
    if before is None:
        return 0

    def run() -> int:
        aborted = 0
        for upload_id in (_open_uploads(engine, bucket, key) or set()) - before:
            try:
                engine.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
                aborted += 1
            except Exception:  # noqa: BLE001 - best effort: the batch retry sweeps again
                continue
        return aborted

    async with engine.slot():  # one request at a time: a slot of the batch's
        aborted = await asyncio.to_thread(run)
    if aborted:
        log.warning("aborted %d abandoned multipart upload(s) of %s", aborted, key)
    return aborted


async def upload_one(engine: Engine, bucket: str, item: LocalFile) -> str:
    """Upload one file with checksums S3 verifies, and check what S3 stored (see module).

    Returns:
        How the stored object was verified (``crc64nvme``, ``md5``, ``content-md5``...).

    Raises:
        IntegrityError: If the stored size or checksums do not match the local file.
        LocalIOError: If the file cannot be read.
    """
    now = limits.current()
    if item.size >= now.multipart_threshold or item.size > now.max_put:
        return await _upload_large(engine, bucket, item, now)
    try:
        with open(item.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    if len(data) != item.size:
        raise IntegrityError(f"{item.path} changed size while uploading")
    md5 = hashlib.md5(data, usedforsecurity=False)
    crc = crt.crc64nvme(data)
    reply = await engine.put(
        bucket, item.key, data, md5.digest(), crc, item.metadata, attributes=item.attributes
    )
    return await _check_put(engine, bucket, item.key, reply, md5.hexdigest(), crc)


async def _check_put(
    engine: Engine, bucket: str, key: str, reply: PutReply, md5: str, crc: int
) -> str:
    """Check a single PUT's reply: the echoed CRC, else an MD5 ETag, else what S3 holds."""
    echoed = StoredChecksum.from_headers(reply.headers or {})
    if echoed is not None and echoed.algorithm == "crc64nvme":
        if not echoed.matches(crc):
            raise IntegrityError(f"checksum mismatch after upload of {key}")
        return "crc64nvme"
    tag = ETag.parse(reply.etag, reply.headers)
    if tag.md5 is not None and tag.md5 == md5:
        return "md5"
    if reply.headers is not None:  # boto3: the server saw our Content-MD5 (and its headers)
        if tag.md5 is not None:
            raise IntegrityError(f"ETag mismatch after upload of {key}")
        return "content-md5"
    info = await engine.head_checked(bucket, key)  # obstore: S3 decides (KMS, changed...)
    stored = info.checksum if info is not None else None
    if stored is not None and stored.algorithm == "crc64nvme":
        if not stored.matches(crc):
            raise IntegrityError(f"checksum mismatch after upload of {key}")
        return "crc64nvme"
    if info is not None and info.tag.md5 is None and info.etag == reply.etag:
        return "payload-sha256"  # encrypted: S3 checked the signed payload's SHA-256
    raise IntegrityError(f"ETag mismatch after upload of {key}")


def _unchanged_since(path: Path, size: int) -> Callable[[], None]:
    """A check that raises if ``path`` is no longer ``size`` bytes with its current mtime."""
    before = os.stat(path)

    def check() -> None:
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (
            size, before.st_mtime_ns, before.st_ino
        ):
            raise IntegrityError(f"{path} changed while uploading: not stored")

    return check


async def _upload_large(
    engine: Engine, bucket: str, item: LocalFile, now: limits.Limits
) -> str:
    path = Path(item.path)
    part_size = limits.part_size_for(item.size, now)
    try:
        unchanged = _unchanged_since(path, item.size)
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    async with engine.slot():
        before = await asyncio.to_thread(_open_uploads, engine, bucket, item.key)
    try:
        reply = await engine.put_multipart(
            bucket, item.key, path, part_size, PART_CONCURRENCY, item.metadata, unchanged,
            attributes=item.attributes,
        )  # fmt: skip
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    finally:
        await sweep_uploads(engine, bucket, item.key, before)
    head = await engine.head(bucket, item.key)
    if head is None or head.size != item.size:
        raise IntegrityError(f"size mismatch after upload of {item.key}")
    echoed = StoredChecksum.from_headers(reply.headers or {})
    return echoed.algorithm if echoed is not None else "content-md5"


def local_matches(path: Path, obj: S3Object) -> bool:
    """True if ``path`` already holds ``obj``: same size, and either the mtime a download
    gave it (the object's LastModified) or, for an MD5 ETag, the same MD5."""
    try:
        stat = path.stat() if path.is_file() else None
    except OSError:
        return False
    if stat is None or stat.st_size != obj.size:
        return False
    if obj.last_modified is not None and abs(stat.st_mtime - obj.last_modified) < 1e-3:
        return True
    md5 = obj.tag.md5
    return md5 is not None and file_md5(path) == md5


async def remote_matches(
    engine: Engine, bucket: str, item: LocalFile, known: S3Object | None
) -> bool:
    """True if S3 already holds ``item`` (``known`` None means: ask S3 with HEAD)."""
    if known is None:
        try:
            head = await engine.head(bucket, item.key)
        except Exception:  # noqa: BLE001 - absent or unreadable: upload it
            return False
        if head is None:
            return False
        known = S3Object(item.key, head.size, head.etag, head.last_modified)
    return await asyncio.to_thread(remote_is, item, known)


def remote_is(item: LocalFile, obj: S3Object) -> bool:
    """True if ``obj`` holds the local file: same size, and the file not modified since the
    object was (aws-cli's rule, in S3's whole seconds), or the same MD5 or multipart ETag
    (of the part size this project uploads it with)."""
    path = Path(item.path)
    try:
        if obj.size != item.size or path.stat().st_size != item.size:
            return False
        if obj.last_modified is not None and int(path.stat().st_mtime) <= obj.last_modified:
            return True
    except OSError:
        return False
    tag = obj.tag
    if tag.md5 is not None:
        return file_md5(path) == tag.md5
    if tag.parts is None:
        return False
    part = limits.part_size_for(item.size, limits.current())
    return -(-item.size // part) == tag.parts and multipart_etag(path, part) == tag.value.lower()
