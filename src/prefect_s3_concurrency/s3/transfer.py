"""Plain functions that list, download and upload batches of S3 objects (no Prefect here).

The per-object work (verification, atomic writes, body retries, multipart) is written once in
:mod:`s3.engines.objects`, on top of an engine (:mod:`s3.engines`). A batch runs on one
event loop with ``requests_in_flight`` objects in flight; the functions here accept either an
engine or a botocore client (wrapped in the boto3 engine).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import FlexibleChecksumError, HTTPClientError, IncompleteReadError
from obstore.exceptions import GenericError
from s3transfer.exceptions import RetriesExceededError
from urllib3.exceptions import HTTPError as URLLib3Error

from prefect_s3_concurrency.errors import (
    IntegrityError,
    ListingError,
    S3PipelineError,
    ThrottledError,
)
from prefect_s3_concurrency.local.paths import matches_filters, relative_key
from prefect_s3_concurrency.runtime import interrupt, progress
from prefect_s3_concurrency.s3.engines import Boto3Engine, Engine
from prefect_s3_concurrency.s3.engines.objects import (
    BODY_ATTEMPTS,
    MULTIPART_THRESHOLD,
    PART_CONCURRENCY,
    PART_SIZE,
    download_one,
    local_matches,
    remote_matches,
    upload_one,
)
from prefect_s3_concurrency.s3.engines.paced import request_ceiling, run_paced
from prefect_s3_concurrency.s3.engines.verify import SIZE_ONLY
from prefect_s3_concurrency.s3.records import BatchResult, LocalFile, S3Object
from prefect_s3_concurrency.s3.upload_options import UploadOptions

T = TypeVar("T")

# A body that arrives short, reset or corrupted is fetched again (BODY_ATTEMPTS in all).
# botocore and object_store retry requests that fail before the body on their own.
RETRYABLE_BODY_ERRORS = (
    IntegrityError, HTTPClientError, IncompleteReadError, FlexibleChecksumError,
    RetriesExceededError, URLLib3Error, http.client.HTTPException, ConnectionError,
    GenericError, TimeoutError, ThrottledError,
)  # fmt: skip
log = logging.getLogger(__name__)
__all__ = [  # the records live in s3.records; re-exported here for callers
    "BODY_ATTEMPTS", "BatchResult", "LocalFile", "MULTIPART_THRESHOLD", "PART_CONCURRENCY",
    "PART_SIZE", "S3Object", "download_objects", "iter_objects", "list_objects", "upload_files",
]  # fmt: skip


def iter_objects(
    client: Any,
    bucket: str,
    folder: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Iterator[list[S3Object]]:
    """Yield the listing under ``folder`` page by page (up to 1,000 objects each), filtered.

    Pages come from :meth:`Engine.list`, on an event loop of this generator's own: each page
    is handed on as soon as it arrives.

    Args:
        client: An engine (see :func:`s3.engines.open_engine`), or a botocore client.
        bucket: Bucket name.
        folder: Key prefix, ``""`` or ending with ``/``.
        include: Globs matched against the key relative to ``folder``.
        exclude: Globs that drop matching keys.

    Yields:
        The objects of one page that pass the globs, in key order. Zero-byte folder markers
        (keys ending with ``/``) are left out; such keys holding data are listed, for the
        planners to reject and report.

    Raises:
        S3AccessError: For a missing bucket, bad credentials or an unreachable endpoint.
        ListingError: For a reply that cannot be trusted, or a page after the first that
            failed (after the client's retries).
    """
    engine, owned = _engine_of(client)
    pages = 0
    with asyncio.Runner() as loop:
        listing = engine.list(bucket, folder)
        try:
            while (page := loop.run(anext(listing, None))) is not None:
                pages += 1
                yield sorted(
                    (
                        o for o in page
                        if not (o.key.endswith("/") and not o.size)
                        and matches_filters(relative_key(o.key, folder), include, exclude)
                    ),
                    key=lambda o: o.key,
                )  # fmt: skip
        except S3PipelineError as error:
            if not pages or isinstance(error, ListingError):
                raise
            # The bucket was reachable: a later page that fails is a failed run, not a setting.
            raise ListingError(f"listing stopped after page {pages}: {error}") from None
        finally:
            loop.run(listing.aclose())
            if owned:
                loop.run(engine.aclose())


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


def _engine_of(client: Any) -> tuple[Engine, bool]:
    """The engine to use, and whether this call made it (and so must close it)."""
    if isinstance(client, Engine):
        return client, False
    return Boto3Engine(client, threads=PART_CONCURRENCY), True


def _run(client: Any, work: Callable[[Engine], Awaitable[T]]) -> T:
    """Run ``work`` on a new event loop (one per batch task) with the engine for ``client``."""
    engine, owned = _engine_of(client)

    async def main() -> T:
        try:
            return await work(engine)
        finally:
            if owned:
                await engine.aclose()

    return asyncio.run(main())


async def _each_object(
    items: Sequence[T],
    key_of: Callable[[T], str],
    size_of: Callable[[T], int],
    is_done: Callable[[T], Awaitable[bool]],
    transfer: Callable[[T], Awaitable[str | None]],
    dry_run: bool,
    in_flight: int = 1,
    done_before: Mapping[str, int] | None = None,
) -> BatchResult:
    """Transfer items, ``in_flight`` at a time, skipping those already done.

    Failures are per item. Keys in ``done_before`` (``key -> size`` transferred or tried by
    an earlier attempt of this batch) are not "already identical": an earlier attempt put
    them there (perhaps a request whose reply was lost), so they count as transferred.
    ``transfer`` returns how the item was verified; those verified by size only are listed.
    """
    result = BatchResult()
    start = time.perf_counter()
    gate = asyncio.Semaphore(max(1, in_flight))
    earlier = done_before or {}

    async def one(item: T) -> None:
        key = key_of(item)
        async with gate:
            try:
                if interrupt.stopping():  # Ctrl-C or SIGTERM: start nothing new
                    raise interrupt.Interrupted("stopped before this object (interrupted)")
                if await is_done(item):
                    if key in earlier:
                        result.transferred.append(key)
                        result.bytes += earlier[key]
                    else:
                        result.skipped.append(key)
                    progress.report(1, size_of(item))
                    return
                if not dry_run and await transfer(item) == SIZE_ONLY:
                    result.size_only.append(key)
                result.transferred.append(key)
                result.bytes += size_of(item)
                progress.report(1, size_of(item))
            except (Exception, interrupt.Interrupted) as exc:  # noqa: BLE001 - per object
                result.fail(key, exc)

    await asyncio.gather(*(one(item) for item in items))
    order = {key_of(item): n for n, item in enumerate(items)}  # keep the batch's key order
    result.transferred.sort(key=order.__getitem__)
    result.skipped.sort(key=order.__getitem__)
    result.seconds = time.perf_counter() - start
    return result


def download_objects(
    client: Any,
    bucket: str,
    items: Sequence[tuple[S3Object, str]],
    skip_existing: bool = True,
    dry_run: bool = False,
    root: str | None = None,
    in_flight: int = 1,
    done_before: Mapping[str, int] | None = None,
    max_requests: int | None = None,
) -> BatchResult:
    """Download a batch of objects, each to its (already safe) path.

    Args:
        client: An engine, or a boto3 S3 client.
        bucket: Source bucket.
        items: ``(object, local path)`` pairs; paths must come from :func:`safe_local_path`.
        skip_existing: Skip objects whose local copy has the same size and checksum.
        dry_run: Decide what would be transferred, but transfer nothing.
        root: The destination directory: every path component below it is opened without
            following symlinks at write time. None: each target's own directory.
        in_flight: Objects in flight at once.
        done_before: ``key -> size`` downloaded by an earlier attempt of this batch.
        max_requests: Most S3 requests in flight (parts, HEADs... included), e.g. the
            slots of a request budget; None: ``in_flight`` objects with their parts.

    Returns:
        The batch result; one object's failure never stops the others.
    """
    base = Path(root) if root else None

    async def fetch(e: Engine, item: tuple[S3Object, str]) -> str:
        return await download_one(e, bucket, item[0], Path(item[1]), base, RETRYABLE_BODY_ERRORS)

    async def done(item: tuple[S3Object, str]) -> bool:
        if not skip_existing or not _same_size(item[1], item[0].size):
            return False  # no file (the usual case): no thread hop, no hashing
        return await asyncio.to_thread(local_matches, Path(item[1]), item[0])

    return _run(client, lambda eng: run_paced(eng, lambda e: _each_object(
        items, key_of=lambda i: i[0].key, size_of=lambda i: i[0].size, is_done=done,
        transfer=lambda i: fetch(e, i), dry_run=dry_run, in_flight=in_flight,
        done_before=done_before,
    ), request_ceiling(in_flight, max_requests)))  # fmt: skip


def _same_size(path: str, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


def upload_files(
    client: Any,
    bucket: str,
    items: Sequence[LocalFile],
    existing: Mapping[str, S3Object | tuple[int, str]] | None = None,
    check_remote: bool = False,
    dry_run: bool = False,
    in_flight: int = 1,
    done_before: Mapping[str, int] | None = None,
    options: UploadOptions | None = None,
    max_requests: int | None = None,
) -> BatchResult:
    """Upload a batch of files.

    Args:
        client: An engine, or a boto3 S3 client.
        bucket: Destination bucket.
        items: Files and their keys.
        existing: The objects already at the destination (listed, or ``key -> (size,
            etag)``); those the local file matches are skipped (see ``remote_is``). None
            disables the check.
        check_remote: Ask S3 (HEAD) whether each object is already there, e.g. on a retry.
        dry_run: Decide what would be transferred, but transfer nothing.
        in_flight: Objects in flight at once.
        done_before: ``key -> size`` uploaded by an earlier attempt of this batch.
        options: Content-Type, encryption, storage class and Cache-Control to set; None
            guesses each Content-Type from the key's file name and sets nothing else.
        max_requests: Most S3 requests in flight (see :func:`download_objects`).

    Returns:
        The batch result; one file's failure never stops the others.
    """
    chosen = options or UploadOptions()
    items = [replace(i, attributes=chosen.attributes_for(i.key)) for i in items]

    def work(e: Engine) -> Awaitable[BatchResult]:
        async def is_done(item: LocalFile) -> bool:
            if check_remote:
                return await remote_matches(e, bucket, item, None)
            known = (existing or {}).get(item.key)
            if isinstance(known, tuple):
                known = S3Object(item.key, known[0], known[1])
            if known is None or known.size != item.size:
                return False
            return await remote_matches(e, bucket, item, known)

        return _each_object(
            items, key_of=lambda i: i.key, size_of=lambda i: i.size, is_done=is_done,
            transfer=lambda i: upload_one(e, bucket, i), dry_run=dry_run, in_flight=in_flight,
            done_before=done_before,
        )  # fmt: skip

    ceiling = request_ceiling(in_flight, max_requests)
    return _run(client, lambda eng: run_paced(eng, work, ceiling))


def delete_objects(
    client: Any, bucket: str, keys: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """Delete ``keys`` from ``bucket`` through the engine (DeleteObjects, 1,000 a request).

    Args:
        client: An engine, or a botocore client.
        bucket: Bucket name.
        keys: The keys to delete.

    Returns:
        The deleted keys, and ``key -> reason`` for those S3 did not delete.
    """
    failed = _run(client, lambda e: e.delete(bucket, keys))
    return [k for k in keys if k not in failed], failed

