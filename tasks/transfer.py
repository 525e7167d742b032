"""Plain functions that list, download and upload batches of S3 objects (no Prefect here)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import FlexibleChecksumError, HTTPClientError, IncompleteReadError
from s3transfer.exceptions import RetriesExceededError
from urllib3.exceptions import HTTPError as URLLib3Error

from prefect_s3_concurrency.tasks import progress
from prefect_s3_concurrency.tasks.errors import (
    IntegrityError,
    S3PipelineError,
    describe_error,
    local_io_error,
    translate_boto_error,
)
from prefect_s3_concurrency.tasks.integrity import (
    CHUNK,
    MIB,
    etag_matches,
    is_md5_etag,
    normalize_etag,
)
from prefect_s3_concurrency.tasks.models import BatchResult, LocalFile, S3Object
from prefect_s3_concurrency.tasks.paths import matches_filters, relative_key, safe_local_path
from prefect_s3_concurrency.tasks.tempfiles import open_partial

T = TypeVar("T")

MULTIPART_THRESHOLD = 16 * MIB
PART_SIZE = 8 * MIB
# Attempts per object for a body that arrives short, reset or corrupted. botocore retries
# requests that fail before the body (5xx, throttling, resets) on its own, but not a body that
# breaks while it is read; s3transfer retries those 5 times for multipart downloads only.
BODY_ATTEMPTS = 3
RETRYABLE_BODY_ERRORS = (
    IntegrityError, HTTPClientError, IncompleteReadError, FlexibleChecksumError,
    RetriesExceededError, URLLib3Error, http.client.HTTPException, ConnectionError,
)  # fmt: skip
log = logging.getLogger(__name__)
__all__ = [  # the records live in tasks.models; re-exported here for callers
    "BatchResult", "LocalFile", "S3Object", "download_objects", "list_objects",
    "plan_downloads", "upload_files",
]  # fmt: skip


def transfer_config(threads_per_object: int = 4) -> TransferConfig:
    """Return the s3transfer config used for large (multipart) objects."""
    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=PART_SIZE,
        max_concurrency=threads_per_object,
    )


def iter_objects(
    client: Any,
    bucket: str,
    folder: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Iterator[list[S3Object]]:
    """Yield the listing under ``folder`` page by page (up to 1,000 objects each), filtered.

    Args:
        client: boto3 S3 client.
        bucket: Bucket name.
        folder: Key prefix, ``""`` or ending with ``/``.
        include: Globs matched against the key relative to ``folder``.
        exclude: Globs that drop matching keys.

    Yields:
        The objects of one page that pass the globs, in key order. Folder markers (keys
        ending with ``/``) are left out.

    Raises:
        S3AccessError: For a missing bucket, bad credentials or an unreachable endpoint.
    """
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
            found = []
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/") and not int(item["Size"]):
                    continue  # a folder marker; one holding data is listed (and rejected)
                if matches_filters(relative_key(key, folder), include, exclude):
                    found.append(S3Object(key, int(item["Size"]), normalize_etag(item.get("ETag"))))
            yield sorted(found, key=lambda o: o.key)
    except Exception as exc:  # noqa: BLE001 - re-raised as a clear one-line error
        raise translate_boto_error(exc, bucket, client.meta.endpoint_url) from None


def list_objects(
    client: Any,
    bucket: str,
    folder: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[S3Object]:
    """List objects under ``folder`` (paginated), keeping those that pass the glob filters.

    Args:
        client: boto3 S3 client.
        bucket: Bucket name.
        folder: Key prefix, ``""`` or ending with ``/``.
        include: Globs matched against the key relative to ``folder``.
        exclude: Globs that drop matching keys.

    Returns:
        Objects sorted by key. Zero-byte folder markers (keys ending with ``/``) are left out;
        such keys holding data are listed, for the planners to reject and report.

    Raises:
        S3AccessError: For a missing bucket, bad credentials or an unreachable endpoint.
    """
    pages = iter_objects(client, bucket, folder, include, exclude)
    return sorted((o for page in pages for o in page), key=lambda o: o.key)


def check_bucket(client: Any, bucket: str) -> None:
    """Raise a clear one-line error unless ``bucket`` exists and is accessible."""
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as exc:  # noqa: BLE001 - re-raised as a clear one-line error
        raise translate_boto_error(exc, bucket, client.meta.endpoint_url) from None


def _local_matches(path: Path, obj: S3Object) -> bool:
    """True if ``path`` already holds ``obj`` (same size and a matching checksum)."""
    try:
        if not path.is_file() or path.stat().st_size != obj.size:
            return False
    except OSError:
        return False
    return etag_matches(path, obj.etag) is True


def _fetch_into(client: Any, bucket: str, obj: S3Object, fh: BinaryIO, tmp: Path) -> None:
    """Write the object's bytes to ``fh`` and check size and checksum."""
    if obj.size >= MULTIPART_THRESHOLD:
        client.download_fileobj(bucket, obj.key, fh, Config=transfer_config())
        fh.flush()
        size = os.fstat(fh.fileno()).st_size
        if size == obj.size and obj.etag and etag_matches(tmp, obj.etag) is False:
            raise IntegrityError(f"checksum mismatch for {obj.key}")
    else:
        kwargs = {"IfMatch": f'"{obj.etag}"'} if obj.etag else {}
        body = client.get_object(Bucket=bucket, Key=obj.key, **kwargs)["Body"]
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        for block in body.iter_chunks(CHUNK):
            fh.write(block)
            digest.update(block)
            size += len(block)
        fh.flush()
        if size == obj.size and is_md5_etag(obj.etag) and digest.hexdigest() != obj.etag:
            raise IntegrityError(f"MD5 mismatch for {obj.key}")
    if size != obj.size:
        raise IntegrityError(f"size mismatch for {obj.key}: got {size}, expected {obj.size}")


def _download_once(client: Any, bucket: str, obj: S3Object, target: Path) -> None:
    tmp, fh = open_partial(target)
    try:
        with fh:
            _fetch_into(client, bucket, obj, fh, tmp)
            os.replace(tmp, target)  # still locked: no clean-up can take it meanwhile
    except OSError as exc:
        raise local_io_error(exc, target) from None
    finally:
        tmp.unlink(missing_ok=True)


def download_object(client: Any, bucket: str, obj: S3Object, target: Path) -> None:
    """Download one object atomically and verify it.

    Small objects take one ``get_object`` (with ``IfMatch`` on the listed ETag); large ones use
    s3transfer multipart. Bytes go to a locked temp file beside ``target``, are checked against
    the listed size and the ETag (MD5 when it is one; botocore also validates the CRC32 that S3
    returns), then renamed into place. On any error the temp file is removed. A short, reset or
    corrupted body is fetched again, up to :data:`BODY_ATTEMPTS` times in all.

    Raises:
        IntegrityError: If size or checksum still do not match after the last attempt.
        LocalIOError: If the destination is full or not writable.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_io_error(exc, target) from None
    for attempt in range(1, BODY_ATTEMPTS + 1):
        try:
            _download_once(client, bucket, obj, target)
            return
        except RETRYABLE_BODY_ERRORS as exc:
            if attempt == BODY_ATTEMPTS:
                raise
            log.warning(
                "retrying %s (attempt %d/%d) after %s",
                obj.key, attempt + 1, BODY_ATTEMPTS, describe_error(exc),
            )  # fmt: skip
            time.sleep(0.1 * 2**attempt * (0.5 + random.random()))  # backoff with jitter


def _each_object(
    items: Sequence[T],
    key_of: Callable[[T], str],
    size_of: Callable[[T], int],
    is_done: Callable[[T], bool],
    transfer: Callable[[T], None],
    dry_run: bool,
) -> BatchResult:
    """Transfer items one after another, skipping those already done; failures are per item."""
    result = BatchResult()
    start = time.perf_counter()
    for item in items:
        key = key_of(item)
        try:
            if is_done(item):
                result.skipped.append(key)
                progress.report(1, size_of(item))
                continue
            if not dry_run:
                transfer(item)
            result.transferred.append(key)
            result.bytes += size_of(item)
            progress.report(1, size_of(item))
        except Exception as exc:  # noqa: BLE001 - recorded per object, batch goes on
            result.fail(key, exc)
    result.seconds = time.perf_counter() - start
    return result


def download_objects(
    client: Any,
    bucket: str,
    items: Sequence[tuple[S3Object, str]],
    skip_existing: bool = True,
    dry_run: bool = False,
) -> BatchResult:
    """Download a batch of objects, one after another, each to its (already safe) path.

    Args:
        client: boto3 S3 client.
        bucket: Source bucket.
        items: ``(object, local path)`` pairs; paths must come from :func:`safe_local_path`.
        skip_existing: Skip objects whose local copy has the same size and checksum.
        dry_run: Decide what would be transferred, but transfer nothing.

    Returns:
        The batch result; one object's failure never stops the others.
    """
    return _each_object(
        items,
        key_of=lambda i: i[0].key,
        size_of=lambda i: i[0].size,
        is_done=lambda i: skip_existing and _local_matches(Path(i[1]), i[0]),
        transfer=lambda i: download_object(client, bucket, i[0], Path(i[1])),
        dry_run=dry_run,
    )


def upload_file(client: Any, bucket: str, item: LocalFile) -> None:
    """Upload one file and verify what S3 stored.

    Small files are read once and sent with ``put_object`` and a Content-MD5 header, so S3
    rejects corrupted bodies; large files use s3transfer multipart and are checked with HEAD.
    The file's ``metadata``, if any, is stored as the object's user metadata.

    Raises:
        IntegrityError: If the stored size or ETag do not match the local file.
    """
    meta = {"Metadata": dict(item.metadata)} if item.metadata else {}
    if item.size >= MULTIPART_THRESHOLD:
        client.upload_file(
            item.path, bucket, item.key, ExtraArgs=meta or None, Config=transfer_config()
        )
        head = client.head_object(Bucket=bucket, Key=item.key)
        if int(head["ContentLength"]) != item.size:
            raise IntegrityError(f"size mismatch after upload of {item.key}")
        if etag_matches(Path(item.path), head.get("ETag", ""), (PART_SIZE,)) is False:
            raise IntegrityError(f"checksum mismatch after upload of {item.key}")
        return
    try:
        with open(item.path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise local_io_error(exc, item.path, "read") from None
    if len(data) != item.size:
        raise IntegrityError(f"{item.path} changed size while uploading")
    md5 = hashlib.md5(data, usedforsecurity=False)
    resp = client.put_object(
        Bucket=bucket,
        Key=item.key,
        Body=data,
        ContentMD5=base64.b64encode(md5.digest()).decode(),
        **meta,
    )
    etag = normalize_etag(resp.get("ETag"))
    if is_md5_etag(etag) and etag != md5.hexdigest():
        raise IntegrityError(f"ETag mismatch after upload of {item.key}")


def _remote_matches(client: Any, bucket: str, item: LocalFile, etag: str | None) -> bool:
    """True if S3 already holds ``item`` (``etag`` None means: ask S3 with HEAD)."""
    if etag is None:
        try:
            head = client.head_object(Bucket=bucket, Key=item.key)
        except Exception:  # noqa: BLE001 - absent or unreadable: upload it
            return False
        if int(head["ContentLength"]) != item.size:
            return False
        etag = head.get("ETag", "")
    return etag_matches(Path(item.path), etag, (PART_SIZE,)) is True


def upload_files(
    client: Any,
    bucket: str,
    items: Sequence[LocalFile],
    existing: dict[str, tuple[int, str]] | None = None,
    check_remote: bool = False,
    dry_run: bool = False,
) -> BatchResult:
    """Upload a batch of files, one after another.

    Args:
        client: boto3 S3 client.
        bucket: Destination bucket.
        items: Files and their keys.
        existing: ``key -> (size, etag)`` of objects already at the destination; matching
            objects are skipped. None disables the check.
        check_remote: Ask S3 (HEAD) whether each object is already there, e.g. on a retry.
        dry_run: Decide what would be transferred, but transfer nothing.

    Returns:
        The batch result; one file's failure never stops the others.
    """

    def is_done(item: LocalFile) -> bool:
        if check_remote:
            return _remote_matches(client, bucket, item, None)
        known = (existing or {}).get(item.key)
        return (
            known is not None
            and known[0] == item.size
            and _remote_matches(client, bucket, item, known[1])
        )

    return _each_object(
        items,
        key_of=lambda i: i.key,
        size_of=lambda i: i.size,
        is_done=is_done,
        transfer=lambda i: upload_file(client, bucket, i),
        dry_run=dry_run,
    )


def plan_downloads(
    objects: Sequence[S3Object], folder: str, dest: Path
) -> tuple[list[tuple[S3Object, str]], dict[str, str]]:
    """Pair each object with its safe local path; return the pairs and the rejected keys."""
    items: list[tuple[S3Object, str]] = []
    rejected: dict[str, str] = {}
    for obj in objects:
        try:
            items.append((obj, str(safe_local_path(dest, relative_key(obj.key, folder)))))
        except S3PipelineError as exc:
            rejected[obj.key] = str(exc)
    progress.expect(len(items), sum(obj.size for obj, _ in items))
    return items, rejected
