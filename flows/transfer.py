"""Flows that download an S3 prefix and upload a directory, batch by batch, on threads.

Run as a script: ``python flows/transfer.py cp s3://bucket/prefix ./out`` (the ``prefect-s3``
command line).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.utilities.annotations import quote

from prefect_s3_concurrency.errors import (
    FailedWithPayload,
    ListingError,
    printable,
    run_failure_message,
)
from prefect_s3_concurrency.flows.batching import (
    IN_FLIGHT_PER_WORKER,
    Batch,
    BatchCutter,
    RunProgress,
    cut_batches,
    run_batches,
)
from prefect_s3_concurrency.flows.common import (
    DEFAULT_WORKERS,
    BatchMiB,
    BatchObjects,
    Globs,
    LocalDir,
    S3Location,
    TaskRetries,
    TransferSummary,
    Workers,
    check_not_empty,
    completed,
    ensure_writable_dir,
    headline,
    log_dry_run,
    log_key_reasons,
    publish_table,
    resolve_location,
    retrying,
    run_name,
)
from prefect_s3_concurrency.flows.events import announce_landed
from prefect_s3_concurrency.flows.runners import DaskAddress, io_runner
from prefect_s3_concurrency.local.files import (
    plan_uploads,
    require_dir_parameter,
    scan_local_files,
    source_root,
)
from prefect_s3_concurrency.local.links import DownloadPlanner
from prefect_s3_concurrency.local.paths import S3Url, relative_key
from prefect_s3_concurrency.local.sync import local_extras, remote_extras
from prefect_s3_concurrency.parameters import documented
from prefect_s3_concurrency.runtime import progress as report_progress
from prefect_s3_concurrency.runtime.budget import RequestBudgetName, resolve_budget
from prefect_s3_concurrency.runtime.redact import install_log_redaction
from prefect_s3_concurrency.s3.connection import CredentialsBlock, S3Connection
from prefect_s3_concurrency.s3.engines import (
    EngineChoice,
    RequestsInFlight,
    batches_for,
    in_flight_for,
    open_engine,
)
from prefect_s3_concurrency.s3.hints import exact_key_hint
from prefect_s3_concurrency.s3.integrity import MIB
from prefect_s3_concurrency.s3.transfer import (
    BatchResult,
    S3Object,
    iter_objects,
)
from prefect_s3_concurrency.s3.upload_options import UploadOptions
from prefect_s3_concurrency.tasks.s3 import (
    delete_local_task,
    delete_objects_task,
    download_batch,
    list_objects_task,
    remove_stale_partials_task,
    upload_batch,
)


class TransferFailed(FailedWithPayload):
    """Raised at the end of a run in which some objects failed or keys were rejected (unless
    allowed); ``summary`` has them all."""

    def __init__(self, summary: TransferSummary, allow_rejected: bool = False) -> None:
        self.summary, self.allow_rejected = summary, allow_rejected
        rejected = {} if allow_rejected else summary.rejected
        super().__init__(run_failure_message(summary.direction, summary.failed, rejected))


def _finish(
    summary: TransferSummary, artifact_key: str, allow_rejected: bool = False
) -> TransferSummary:
    """Log, publish the artifact and fail the run if any object failed or was rejected."""
    logger = get_run_logger()
    log_key_reasons(summary.rejected, summary.failed)
    if summary.dry_run:
        log_dry_run(summary.planned, summary.deleted, summary.direction)
    verb = "would transfer" if summary.dry_run else "transferred"
    logger.info(
        "%s: %s %d objects (%d bytes) in %.2fs, %.1f files/s; skipped %d, rejected %d, failed %d",
        summary.direction, verb, summary.objects, summary.bytes, summary.seconds,
        summary.files_per_second, summary.skipped, len(summary.rejected), len(summary.failed),
    )  # fmt: skip
    if summary.verified_by_size_only:
        logger.warning(
            "%s: %d object(s) verified by size only (S3 keeps no checksum this project can "
            "check for them): %s", summary.direction, len(summary.verified_by_size_only),
            ", ".join(printable(k) for k in summary.verified_by_size_only[:10]),
        )  # fmt: skip
    publish_table(artifact_key, summary.rows(), f"{summary.direction} summary")
    if summary.failed or (summary.rejected and not allow_rejected):
        raise TransferFailed(summary, allow_rejected)
    announce_landed(summary)  # prefect-s3.objects.landed: starts chained deployments
    numbers = headline(summary.objects, summary.bytes, summary.seconds)
    skipped = f", {summary.skipped} already identical" if summary.skipped else ""
    return completed(summary, f"{'dry run: ' if summary.dry_run else ''}{numbers}{skipped}")


def _may_delete(
    summary: TransferSummary, extras: list[str], source_count: int, allow_rejected: bool
) -> bool:
    """Log and return whether the extras may be deleted (never after failures, unaccepted
    rejections, or from an empty source, where a mistyped location would wipe the
    destination)."""
    if not extras:
        return False
    logger = get_run_logger()
    if summary.failed:
        logger.warning(
            "not deleting %d extra object(s): %d transfer(s) failed", len(extras),
            len(summary.failed),
        )  # fmt: skip
    elif summary.rejected and not allow_rejected:
        logger.warning(
            "not deleting %d extra object(s): %d key(s) rejected (allow_rejected=True "
            "deletes anyway)", len(extras), len(summary.rejected),
        )  # fmt: skip
    elif not source_count:
        logger.warning("not deleting %d extra object(s): the source is empty", len(extras))
    elif summary.dry_run:
        summary.deleted = extras
        logger.info("dry run: would delete %d extra object(s)", len(extras))
    else:
        return True
    return False


def log_left_alone(rels: list[str]) -> None:
    """Say once which local files sync leaves alone: no S3 key could have their names."""
    if rels:
        more = f" (+{len(rels) - 5} more)" if len(rels) > 5 else ""
        get_run_logger().warning(
            "left alone %d local file(s) whose names no S3 key can have: %s%s", len(rels),
            ", ".join(printable(r) for r in rels[:5]), more,
        )  # fmt: skip


def _record_deletes(summary: TransferSummary, done: tuple[list[str], dict[str, str]]) -> None:
    deleted, failed = done
    summary.deleted = deleted
    summary.failed.update(failed)
    get_run_logger().info("deleted %d extra object(s) at the destination", len(deleted))


@dataclass
class _Listing:
    """What a streamed listing has shown so far."""

    objects: int = 0
    keep: set[str] = field(default_factory=set)  # relative keys, for delete_extra
    batches: int | None = None  # total batch count, once the listing has ended


def _pages(
    client: Any, url: S3Url, globs: tuple[Sequence[str], Sequence[str]], summary: TransferSummary
) -> Iterator[list[S3Object]]:
    """The listing's pages; one that fails after the first is a failure of the run (it names
    the listing), so the objects listed so far are still transferred and nothing deleted."""
    try:
        yield from iter_objects(client, url.bucket, url.folder, *globs)
    except ListingError as exc:
        summary.failed[f"{url} (listing)"] = str(exc)


def _download_batches(
    conn: S3Connection,
    url: S3Url,
    dest: Path,
    globs: tuple[Sequence[str], Sequence[str]],
    cut: BatchCutter[tuple[S3Object, str]],
    summary: TransferSummary,
    progress: RunProgress,
    listing: _Listing,
    params: Callable[[list[tuple[S3Object, str]]], dict[str, Any]],
) -> Iterator[Batch]:
    """List the source page by page and yield download batches as they fill."""
    engine, emitted = open_engine(conn, "auto", cut.workers), 0
    planner = DownloadPlanner(url.folder, dest)
    try:
        for page in chain(_pages(engine, url, globs, summary), [None]):
            if page is None:  # the listing has ended: the keys through a symlink now
                items, rejected = planner.finish()
                listing.keep |= planner.keep
            else:
                listing.objects += len(page)
                listing.keep.update(relative_key(o.key, url.folder) for o in page)
                items, rejected = planner.plan(page)
            summary.rejected.update(rejected)
            progress.add_total(len(items))
            for batch in cut.add(items):
                emitted += 1
                yield Batch(params(batch), [o.key for o, _ in batch], sum(o.size for o, _ in batch))
    finally:
        engine.close()
    rest = list(cut.finish())
    listing.batches = emitted + len(rest)
    report_progress.planned()  # the listing ended: the totals are final
    for batch in rest:
        yield Batch(params(batch), [o.key for o, _ in batch], sum(o.size for o, _ in batch))


def _record_result(summary: TransferSummary, result: BatchResult) -> None:
    """Copy a merged batch result into the run summary."""
    summary.objects, summary.bytes = len(result.transferred), result.bytes
    summary.skipped = len(result.skipped)
    summary.failed.update(result.failed)  # after any listing failure
    summary.verified_by_size_only = result.size_only
    summary.throttled = result.throttled
    summary.planned = result.transferred if summary.dry_run else []


@flow(name="download-prefix", flow_run_name=run_name("download", "source", "dest_dir"))
@documented
def download_prefix(
    source: S3Location,
    dest_dir: LocalDir,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    credentials: CredentialsBlock | None = None,
    connection: S3Connection = S3Connection(),  # noqa: B008 - frozen, shared safely
    delete_extra: bool = False,
    fail_if_empty: bool = False,
    dask_address: DaskAddress = None,
    allow_rejected: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
    request_budget: RequestBudgetName = None,
) -> TransferSummary:
    """Download every object under an S3 prefix into a local directory, keeping relative keys.

    Keys that would land outside the destination are rejected and reported, never written.
    Downloads are atomic and verified; identical local files are skipped; temp files left by
    a killed run are removed first.

    Args:
        source: Where to read: s3://bucket/prefix, or an S3Bucket block (bucket and folder).
        dest_dir: Local directory to write into; created if missing.
        include: Only keys (relative to the prefix) matching one of these globs.
        exclude: Skip keys matching any of these globs.
        skip_existing: Skip objects whose local copy has the same size and checksum.
        dry_run: Name what would be downloaded or deleted; transfer nothing.
        credentials: AWS or MinIO credentials block; empty means the default AWS chain.
        connection: Endpoint, region and botocore retry settings.
        delete_extra: Also delete local files (passing the globs) that the source lacks.
        fail_if_empty: Fail the run when the source holds no matching object.
        dask_address: Run the batch tasks on this Dask cluster instead of local threads.
        allow_rejected: Let the run succeed although some keys were rejected (unsafe paths).
        engine: Transfer engine: auto (the fastest available), obstore or boto3.
        request_budget: A Prefect global concurrency limit shared with other runs: each
            batch holds one slot per request it may have in flight (docs/sharing-s3.md).

    The bounded numbers (workers, batch sizes, retries) are described where they are
    declared, in :mod:`prefect_s3_concurrency.parameters`.
    """
    install_log_redaction()  # before any library logs a request
    start = time.perf_counter()
    url, conn = resolve_location(source, connection.with_credentials(credentials))
    budget = resolve_budget(request_budget, in_flight_for(engine, requests_in_flight))
    require_dir_parameter(dest_dir, "dest_dir")
    dest = ensure_writable_dir(dest_dir)
    stale = [] if dry_run else remove_stale_partials_task(str(dest))
    summary = TransferSummary(
        direction="download", source=str(url), destination=str(dest), dry_run=dry_run,
        stale_removed=len(stale),
    )  # fmt: skip
    progress, listing = RunProgress("download-progress", f"download {url}"), _Listing()
    lanes = batches_for(engine, workers)  # batch tasks at once (an async engine needs few)
    common = {
        "conn": conn,
        "pool_size": workers,
        "bucket": url.bucket,
        "dry_run": dry_run,
        "engine": engine,
        "requests_in_flight": requests_in_flight,
        "root": str(dest),
        "request_budget": budget,
    }
    cut = BatchCutter[tuple[S3Object, str]](
        lambda i: i[0].size, batch_max_objects, batch_max_mib * MIB, lanes
    )
    batches = _download_batches(
        conn, url, dest, (include or (), exclude or ()), cut, summary, progress, listing,
        lambda b: {**common, "items": quote(b), "skip_existing": skip_existing},
    )  # fmt: skip
    with io_runner(lanes, dask_address) as runner:
        result = run_batches(
            runner, retrying(download_batch, task_retries), "download", batches, progress,
            lanes * IN_FLIGHT_PER_WORKER, lambda: listing.batches,
        )  # fmt: skip
    _record_result(summary, result)
    hint = "" if listing.objects else exact_key_hint(conn, url)
    check_not_empty(listing.objects, str(url), fail_if_empty, hint)
    if delete_extra:
        extras, left_alone = local_extras(dest, listing.keep, include or (), exclude or ())
        log_left_alone(left_alone)
        if _may_delete(summary, extras, listing.objects, allow_rejected):
            _record_deletes(summary, delete_local_task(str(dest), extras))
    summary.seconds = time.perf_counter() - start
    progress.finish(success=not summary.failed and (allow_rejected or not summary.rejected))
    return _finish(summary, "download-summary", allow_rejected)


@flow(name="upload-directory", flow_run_name=run_name("upload", "source_dir", "dest"))
@documented
def upload_directory(
    source_dir: LocalDir,
    dest: S3Location,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    credentials: CredentialsBlock | None = None,
    connection: S3Connection = S3Connection(),  # noqa: B008 - frozen, shared safely
    delete_extra: bool = False,
    fail_if_empty: bool = False,
    dask_address: DaskAddress = None,
    follow_symlinks: bool = False,
    allow_outside_symlinks: bool = False,
    allow_rejected: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
    upload_options: UploadOptions = UploadOptions(),  # noqa: B008 - frozen, shared safely
    request_budget: RequestBudgetName = None,
) -> TransferSummary:
    """Upload every file under a local directory to an S3 prefix, keeping relative paths as keys.

    Uploads carry checksums S3 verifies (CRC64NVME, Content-MD5); identical objects are skipped.

    Args:
        source_dir: Local directory to read.
        dest: Where to write: s3://bucket/prefix, or an S3Bucket block (bucket and folder).
        include: Only files (relative paths) matching one of these globs.
        exclude: Skip files matching any of these globs.
        skip_existing: Skip files already stored with the same size and checksum.
        dry_run: Name what would be uploaded or deleted; transfer nothing.
        credentials: AWS or MinIO credentials block; empty means the default AWS chain.
        connection: Endpoint, region and botocore retry settings.
        delete_extra: Also delete objects under the prefix (passing the globs) with no local file.
        fail_if_empty: Fail the run when the directory holds no matching file.
        dask_address: Run the batch tasks on this Dask cluster instead of local threads.
        follow_symlinks: Follow symbolic links (skipped and reported by default).
        allow_outside_symlinks: With follow_symlinks, also follow links out of source_dir.
        allow_rejected: Let the run succeed although some files were rejected.
        engine: Transfer engine: auto (the fastest available), obstore or boto3.
        upload_options: Content-Type (guessed from each file name by default), server-side
            encryption, storage class and Cache-Control of the uploaded objects.
        request_budget: A Prefect global concurrency limit shared with other runs: each
            batch holds one slot per request it may have in flight (docs/sharing-s3.md).

    The bounded numbers (workers, batch sizes, retries) are described where they are
    declared, in :mod:`prefect_s3_concurrency.parameters`.
    """
    install_log_redaction()  # before any library logs a request
    start = time.perf_counter()
    url, conn = resolve_location(dest, connection.with_credentials(credentials))
    budget = resolve_budget(request_budget, in_flight_for(engine, requests_in_flight))
    root = source_root(source_dir)
    # Listing the destination proves the bucket is reachable and finds identical objects.
    listed = list_objects_task(conn, url.bucket, url.folder, pool_size=workers)
    existing = {o.key: o for o in listed if skip_existing}
    scan = scan_local_files(
        root, include or (), exclude or (), follow_symlinks=follow_symlinks,
        allow_outside_symlinks=allow_outside_symlinks,
    )  # fmt: skip
    local = scan.files
    check_not_empty(len(local), str(root), fail_if_empty)
    files, rejected = plan_uploads(local, url)
    report_progress.planned()
    summary = TransferSummary(
        direction="upload", source=str(root.resolve()), destination=str(url), dry_run=dry_run,
        rejected={**scan.rejected, **rejected},
    )  # fmt: skip
    progress = RunProgress("upload-progress", f"upload {root} to {url}")
    progress.add_total(len(files))
    lanes = batches_for(engine, workers)  # batch tasks at once (an async engine needs few)
    common = {
        "conn": conn,
        "pool_size": workers,
        "bucket": url.bucket,
        "dry_run": dry_run,
        "engine": engine,
        "requests_in_flight": requests_in_flight,
        "upload_options": upload_options,
        "request_budget": budget,
    }
    cuts = cut_batches(files, lambda f: f.size, batch_max_objects, batch_max_mib * MIB, lanes)
    batches = (
        Batch(
            {**common, "items": quote(b),
             "existing": quote({f.key: existing[f.key] for f in b if f.key in existing})},
            [f.key for f in b], sum(f.size for f in b),
        )
        for b in cuts
    )  # fmt: skip
    with io_runner(lanes, dask_address) as runner:
        result = run_batches(
            runner, retrying(upload_batch, task_retries), "upload", batches, progress,
            lanes * IN_FLIGHT_PER_WORKER, lambda: len(cuts),
        )  # fmt: skip
    _record_result(summary, result)
    summary.failed.update(scan.unreadable)  # never "absent": nothing is deleted after this
    if delete_extra:
        extras = remote_extras(
            listed, url.folder, {f.key for f in files}, include or (), exclude or ()
        )
        if _may_delete(summary, extras, len(local), allow_rejected):
            _record_deletes(summary, delete_objects_task(conn, url.bucket, extras))
    summary.seconds = time.perf_counter() - start
    progress.finish(success=not summary.failed and (allow_rejected or not summary.rejected))
    return _finish(summary, "upload-summary", allow_rejected)


if __name__ == "__main__":
    from prefect_s3_concurrency.cli import main

    raise SystemExit(main())
