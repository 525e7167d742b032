"""One object at a time, written once for every engine: verify, write atomically, retry.

Downloads go to a locked temp file created through :mod:`local.safe_write` (no symlink on
the way is followed, at write time), are checked for size and checksum while they stream
(MD5, or the per-part MD5s of a multipart ETag), and are renamed into place. Objects from
:data:`MULTIPART_THRESHOLD` are fetched as parallel ranged GETs written at their offsets and
hashed on worker threads (:mod:`s3.engines.ranged`); a server that answers a Range with
the whole object is detected on the first part and read in one streamed GET instead, from
then on (``rclone serve s3``'s 200 that carries just the range and its ``Content-Range`` is
taken as the partial reply it is).

Uploads send small files in one PUT (Content-MD5 with boto3; obstore's returned ETag is
compared with the local MD5) and large ones as multipart uploads, checked with HEAD against
the locally computed multipart ETag. After every multipart upload, failed or not, uploads of
that key which were not open before it started (a failed upload, or one that a
``CreateMultipartUpload`` retried after its reply was lost left behind) are aborted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
from pathlib import Path

from prefect_s3_concurrency.errors import IntegrityError, describe_error, local_io_error
from prefect_s3_concurrency.local.safe_write import PartialFile, open_partial_at
from prefect_s3_concurrency.s3.engines.base import Engine, RangeNotSupported, write_at
from prefect_s3_concurrency.s3.engines.ranged import ranges_into
from prefect_s3_concurrency.s3.integrity import (
    COMMON_PART_SIZES,
    etag_matches,
    file_md5,
    is_md5_etag,
    multipart_etag,
    multipart_part_count,
    normalize_etag,
)
from prefect_s3_concurrency.s3.records import LocalFile, S3Object

MIB = 2**20
MULTIPART_THRESHOLD = 16 * MIB
PART_SIZE = 8 * MIB
PART_CONCURRENCY = 8  # ranged GETs / part PUTs in flight per large object
BODY_ATTEMPTS = 3
log = logging.getLogger("prefect_s3_concurrency.s3.transfer")


async def _stream_into(engine: Engine, bucket: str, obj: S3Object, part: PartialFile) -> str:
    """One GET of the whole object into ``part``; return the MD5 hex of what arrived."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    async for block in engine.get(bucket, obj.key, if_match=obj.etag or None):
        size += write_at(part.fd, block, size, digest)
    if size != obj.size:
        raise IntegrityError(f"size mismatch for {obj.key}: got {size}, expected {obj.size}")
    return digest.hexdigest()


def _guess_part_size(obj: S3Object) -> int:
    """The part size that reproduces a multipart ETag's part count (8 MiB otherwise)."""
    count = multipart_part_count(obj.etag)
    if count is not None and count > 1:
        for size in COMMON_PART_SIZES:
            if -(-obj.size // size) == count:
                return size
    return PART_SIZE


async def _download_once(
    engine: Engine, bucket: str, obj: S3Object, target: Path, root: Path
) -> None:
    with open_partial_at(root, target) as part:
        if obj.size >= MULTIPART_THRESHOLD and engine.ranges_ok:
            try:
                await ranges_into(
                    engine, bucket, obj, part.fd, _guess_part_size(obj), PART_CONCURRENCY,
                    lambda: _file_matches(part, obj),
                )  # fmt: skip
            except RangeNotSupported:
                os.ftruncate(part.fd, 0)
                await _check_stream(engine, bucket, obj, part)
        else:
            await _check_stream(engine, bucket, obj, part)
        part.commit()  # still locked: no clean-up can take it meanwhile


async def _check_stream(engine: Engine, bucket: str, obj: S3Object, part: PartialFile) -> None:
    md5 = await _stream_into(engine, bucket, obj, part)
    if is_md5_etag(obj.etag) and md5 != obj.etag:
        raise IntegrityError(f"MD5 mismatch for {obj.key}")
    if obj.etag and not is_md5_etag(obj.etag):
        await _check_file(part, obj)


async def _file_matches(part: PartialFile, obj: S3Object) -> bool | None:
    """Read the written temp file back (through its fd) against the ETag (see etag_matches)."""
    path = Path(f"/proc/self/fd/{part.fd}")  # the open file itself, wherever its name went
    if not path.exists():
        path = part.path
    return await asyncio.to_thread(etag_matches, path, obj.etag)


async def _check_file(part: PartialFile, obj: S3Object) -> None:
    if await _file_matches(part, obj) is False:
        raise IntegrityError(f"checksum mismatch for {obj.key}")


async def download_one(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    target: Path,
    root: Path | None,
    retryable: tuple[type[BaseException], ...],
) -> None:
    """Download one object atomically and verify it, re-fetching a bad body (see module).

    Args:
        engine: The batch's engine.
        bucket: Source bucket.
        obj: The listed object (size and ETag are checked).
        target: Final path, under ``root``.
        root: Directory every component is opened from without following symlinks;
            ``target``'s parent if None.
        retryable: Errors for which the body is fetched again (up to BODY_ATTEMPTS in all).

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
            await _download_once(engine, bucket, obj, target, base)
            return
        except OSError as exc:
            raise local_io_error(exc, target) from None
        except retryable as exc:
            if attempt == BODY_ATTEMPTS:
                raise
            log.warning(
                "retrying %s (attempt %d/%d) after %s",
                obj.key, attempt + 1, BODY_ATTEMPTS, describe_error(exc),
            )  # fmt: skip
            await asyncio.sleep(0.1 * 2**attempt * (0.5 + random.random()))


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

    aborted = await asyncio.to_thread(run)
    if aborted:
        log.warning("aborted %d abandoned multipart upload(s) of %s", aborted, key)
    return aborted


async def upload_one(engine: Engine, bucket: str, item: LocalFile) -> None:
    """Upload one file and verify what S3 stored (see the module docstring).

    Raises:
        IntegrityError: If the stored size or ETag do not match the local file.
        LocalIOError: If the file cannot be read.
    """
    if item.size >= MULTIPART_THRESHOLD:
        await _upload_large(engine, bucket, item)
        return
    try:
        with open(item.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    if len(data) != item.size:
        raise IntegrityError(f"{item.path} changed size while uploading")
    md5 = hashlib.md5(data, usedforsecurity=False)
    etag = await engine.put(
        bucket, item.key, data, md5.digest(), item.metadata, attributes=item.attributes
    )
    if is_md5_etag(etag) and etag != md5.hexdigest():
        raise IntegrityError(f"ETag mismatch after upload of {item.key}")


# endpoint -> True if it reports multipart ETags (md5-of-parts-N), False for a whole-object
# MD5 (rclone): learned from the first HEAD, so later uploads hash while they upload.
_multipart_style: dict[str, bool] = {}


def _expected_etag(path: Path, multipart: bool) -> str:
    return multipart_etag(path, PART_SIZE) if multipart else file_md5(path)


async def _upload_large(engine: Engine, bucket: str, item: LocalFile) -> None:
    path = Path(item.path)
    style = _multipart_style.get(engine.endpoint)
    hashing = (  # the local checksum, computed on a thread while the parts upload
        asyncio.ensure_future(asyncio.to_thread(_expected_etag, path, style))
        if style is not None
        else None
    )
    before = await asyncio.to_thread(_open_uploads, engine, bucket, item.key)
    try:
        await engine.put_multipart(
            bucket, item.key, path, PART_SIZE, PART_CONCURRENCY, item.metadata,
            attributes=item.attributes,
        )  # fmt: skip
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    finally:
        await sweep_uploads(engine, bucket, item.key, before)
        expected = await hashing if hashing is not None else None
    head = await engine.head(bucket, item.key)
    if head is None or head.size != item.size:
        raise IntegrityError(f"size mismatch after upload of {item.key}")
    multipart = not is_md5_etag(head.etag)
    _multipart_style[engine.endpoint] = multipart
    if expected is None or multipart != style:
        if await asyncio.to_thread(etag_matches, path, head.etag, (PART_SIZE,)) is False:
            raise IntegrityError(f"checksum mismatch after upload of {item.key}")
    elif expected != head.etag:
        raise IntegrityError(f"checksum mismatch after upload of {item.key}")


def local_matches(path: Path, obj: S3Object) -> bool:
    """True if ``path`` already holds ``obj`` (same size and a matching checksum)."""
    try:
        if not path.is_file() or path.stat().st_size != obj.size:
            return False
    except OSError:
        return False
    return etag_matches(path, obj.etag) is True


async def remote_matches(engine: Engine, bucket: str, item: LocalFile, etag: str | None) -> bool:
    """True if S3 already holds ``item`` (``etag`` None means: ask S3 with HEAD)."""
    if etag is None:
        try:
            head = await engine.head(bucket, item.key)
        except Exception:  # noqa: BLE001 - absent or unreadable: upload it
            return False
        if head is None or head.size != item.size:
            return False
        etag = head.etag
    return await asyncio.to_thread(etag_is, item, etag)


def etag_is(item: LocalFile, etag: str) -> bool:
    """True if the local file matches ``etag`` (MD5, or a multipart ETag of known parts)."""
    return etag_matches(Path(item.path), normalize_etag(etag), (PART_SIZE,)) is True
