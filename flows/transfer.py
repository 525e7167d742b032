"""Flows that download an S3 prefix and upload a directory, batch by batch, on threads.

Run as a script: ``python flows/transfer.py download s3://bucket/prefix ./out``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from prefect_s3_concurrency.flows.common import (
    BatchMiB,
    BatchObjects,
    Globs,
    S3Uri,
    TaskRetries,
    TransferSummary,
    Workers,
    ensure_writable_dir,
    gather_batches,
    log_key_reasons,
    publish_table,
)
from prefect_s3_concurrency.tasks.client import S3Connection
from prefect_s3_concurrency.tasks.engines import EngineChoice, RequestsInFlight, batches_for
from prefect_s3_concurrency.tasks.errors import ConfigurationError, S3PipelineError
from prefect_s3_concurrency.tasks.paths import make_batches, parse_s3_url, relative_key
from prefect_s3_concurrency.tasks.s3 import (
    delete_local_task,
    delete_objects_task,
    download_batch,
    list_objects_task,
    remove_stale_partials_task,
    upload_batch,
)
from prefect_s3_concurrency.tasks.sync import local_extras, remote_extras
from prefect_s3_concurrency.tasks.transfer import (
    BatchResult,
    list_local_files,
    plan_downloads,
    plan_uploads,
)

DEFAULT_WORKERS = 16


class TransferFailed(S3PipelineError):
    """Raised at the end of a run in which some objects failed; ``summary`` has them all."""

    def __init__(self, summary: TransferSummary) -> None:
        self.summary = summary
        reasons = Counter(summary.failed.values())
        reason, count = reasons.most_common(1)[0] if reasons else ("", 0)
        super().__init__(
            f"{len(summary.failed)} object(s) failed in {summary.direction}: "
            + ", ".join(sorted(summary.failed)[:10])
            + (" ..." if len(summary.failed) > 10 else "")
            + (f" ({'all' if count == len(summary.failed) else count}: {reason})" if reason else "")
        )

    def __reduce__(self):  # keep the summary when pickled
        return (type(self), (self.summary,))


def _finish(summary: TransferSummary, artifact_key: str) -> TransferSummary:
    """Log, publish the artifact and fail the run if any object failed."""
    logger = get_run_logger()
    log_key_reasons(summary.rejected, summary.failed)
    verb = "would transfer" if summary.dry_run else "transferred"
    logger.info(
        "%s: %s %d objects (%d bytes) in %.2fs, %.1f files/s; skipped %d, rejected %d, failed %d",
        summary.direction, verb, summary.objects, summary.bytes, summary.seconds,
        summary.files_per_second, summary.skipped, len(summary.rejected), len(summary.failed),
    )  # fmt: skip
    publish_table(artifact_key, summary.rows(), f"{summary.direction} summary")
    if summary.failed:
        raise TransferFailed(summary)
    return summary


def _retrying(task_obj, task_retries: int):
    delays = exponential_backoff(backoff_factor=1)(task_retries) if task_retries else 0
    return task_obj.with_options(retries=task_retries, retry_delay_seconds=delays)


def _warn_if_empty(count: int, where: str) -> None:
    if not count:
        get_run_logger().warning(
            "empty source: no objects to transfer from %s (check the location and the "
            "include/exclude globs); completing with 0 objects",
            where,
        )


def _may_delete(summary: TransferSummary, extras: list[str], source_count: int) -> bool:
    """Log and return whether the extras may be deleted (never after failures or from an
    empty source, where a mistyped location would wipe the destination)."""
    if not extras:
        return False
    logger = get_run_logger()
    if summary.failed:
        logger.warning(
            "not deleting %d extra object(s): %d transfer(s) failed", len(extras),
            len(summary.failed),
        )  # fmt: skip
    elif not source_count:
        logger.warning("not deleting %d extra object(s): the source is empty", len(extras))
    elif summary.dry_run:
        summary.deleted = extras
        logger.info("dry run: would delete %d extra object(s)", len(extras))
    else:
        return True
    return False


def _record_deletes(summary: TransferSummary, done: tuple[list[str], dict[str, str]]) -> None:
    deleted, failed = done
    summary.deleted = deleted
    summary.failed.update(failed)
    get_run_logger().info("deleted %d extra object(s) at the destination", len(deleted))


def _run_batches(
    task_obj: Any,
    workers: int,
    batches: list[list[Any]],
    params_for: Callable[[list[Any]], dict[str, Any]],
    keys_of: Callable[[list[Any]], list[str]],
) -> BatchResult:
    """Run one batch task per batch on ``workers`` threads and merge their results."""
    runner: ThreadPoolTaskRunner[Any]
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        futures: list[Any] = [runner.submit(task_obj, params_for(batch)) for batch in batches]
        return gather_batches(futures, [keys_of(batch) for batch in batches])


def _record_result(summary: TransferSummary, result: BatchResult) -> None:
    """Copy a merged batch result into the run summary."""
    summary.objects, summary.bytes = len(result.transferred), result.bytes
    summary.skipped, summary.failed = len(result.skipped), result.failed
    summary.planned = result.transferred if summary.dry_run else []


@flow(name="download-prefix")
def download_prefix(
    source: S3Uri,
    dest_dir: str,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    connection: S3Connection = S3Connection(),  # noqa: B008
    delete_extra: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
) -> TransferSummary:
    """Download every object under ``source`` into ``dest_dir``, keeping relative keys.

    Keys that would land outside ``dest_dir`` are rejected and reported, never written.
    Downloads are atomic and verified; identical local files are skipped. Temp files left by
    a killed run are removed first. ``delete_extra`` also deletes local files under
    ``dest_dir`` (passing the globs) that the source does not have.
    """
    start = time.perf_counter()
    url = parse_s3_url(source)
    dest = ensure_writable_dir(dest_dir)
    stale = [] if dry_run else remove_stale_partials_task(str(dest))
    objects = list_objects_task(
        connection, url.bucket, url.folder, include or (), exclude or (), pool_size=workers
    )
    _warn_if_empty(len(objects), source)
    items, rejected = plan_downloads(objects, url.folder, dest)
    summary = TransferSummary(
        direction="download", source=source, destination=str(dest), dry_run=dry_run,
        rejected=rejected, stale_removed=len(stale),
    )  # fmt: skip
    batches = make_batches(
        items, lambda i: i[0].size, batch_max_objects, batch_max_mib * 2**20,
        batches_for(engine, workers),
    )
    common = {"conn": connection, "pool_size": workers, "bucket": url.bucket, "dry_run": dry_run,
              "engine": engine, "requests_in_flight": requests_in_flight, "root": str(dest)}
    result = _run_batches(
        _retrying(download_batch, task_retries), batches_for(engine, workers), batches,
        lambda b: {**common, "items": quote(b), "skip_existing": skip_existing},
        lambda b: [o.key for o, _ in b],
    )  # fmt: skip
    _record_result(summary, result)
    if delete_extra:
        keep = {relative_key(o.key, url.folder) for o in objects}
        extras = local_extras(dest, keep, include or (), exclude or ())
        if _may_delete(summary, extras, len(objects)):
            _record_deletes(summary, delete_local_task(str(dest), extras))
    summary.seconds = time.perf_counter() - start
    return _finish(summary, "download-summary")


@flow(name="upload-directory")
def upload_directory(
    source_dir: str,
    dest: S3Uri,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    connection: S3Connection = S3Connection(),  # noqa: B008
    delete_extra: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
) -> TransferSummary:
    """Upload every file under ``source_dir`` to ``dest``, keeping relative paths as keys.

    Uploads are verified (Content-MD5, then ETag/size); identical objects are skipped.
    ``delete_extra`` also deletes objects under ``dest`` (passing the globs) that have no
    local file. ``engine`` and ``requests_in_flight`` as for ``download-prefix``.
    """
    start = time.perf_counter()
    url = parse_s3_url(dest)
    root = Path(source_dir).expanduser()
    if not root.is_dir():
        raise ConfigurationError(f"source directory {str(root)!r} does not exist")
    # Listing the destination proves the bucket is reachable and finds identical objects.
    listed = list_objects_task(connection, url.bucket, url.folder, pool_size=workers)
    existing = {o.key: (o.size, o.etag) for o in listed if skip_existing}
    local = list_local_files(root, include or (), exclude or ())
    _warn_if_empty(len(local), str(root))
    files, rejected = plan_uploads(local, url)
    summary = TransferSummary(
        direction="upload", source=str(root.resolve()), destination=dest, dry_run=dry_run,
        rejected=rejected,
    )  # fmt: skip
    batches = make_batches(
        files, lambda f: f.size, batch_max_objects, batch_max_mib * 2**20,
        batches_for(engine, workers),
    )
    common = {"conn": connection, "pool_size": workers, "bucket": url.bucket, "dry_run": dry_run,
              "engine": engine, "requests_in_flight": requests_in_flight}
    result = _run_batches(
        _retrying(upload_batch, task_retries), batches_for(engine, workers), batches,
        lambda b: {**common, "items": quote(b),
                   "existing": quote({f.key: existing[f.key] for f in b if f.key in existing})},
        lambda b: [f.key for f in b],
    )  # fmt: skip
    _record_result(summary, result)
    if delete_extra:
        extras = remote_extras(
            listed, url.folder, {f.key for f in files}, include or (), exclude or ()
        )
        if _may_delete(summary, extras, len(local)):
            _record_deletes(summary, delete_objects_task(connection, url.bucket, extras))
    summary.seconds = time.perf_counter() - start
    return _finish(summary, "upload-summary")


if __name__ == "__main__":
    from prefect_s3_concurrency.flows.cli import run_cli

    run_cli(download_prefix, upload_directory)
