"""Flows that download an S3 prefix and upload a directory, batch by batch, on threads.

Run as a script: ``python flows/transfer.py download s3://bucket/prefix ./out``.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote

from flows.common import (
    BatchMiB,
    BatchObjects,
    Globs,
    S3Uri,
    TaskRetries,
    TransferSummary,
    Workers,
    ensure_writable_dir,
    gather_batches,
    publish_table,
)
from tasks.client import S3Connection
from tasks.errors import ConfigurationError, S3PipelineError
from tasks.paths import make_batches, parse_s3_url
from tasks.s3 import download_batch, list_objects_task, upload_batch
from tasks.transfer import list_local_files, plan_downloads, plan_uploads

DEFAULT_WORKERS = 16


class TransferFailed(S3PipelineError):
    """Raised at the end of a run in which some objects failed; ``summary`` has them all."""

    def __init__(self, summary: TransferSummary) -> None:
        self.summary = summary
        super().__init__(
            f"{len(summary.failed)} object(s) failed in {summary.direction}: "
            + ", ".join(sorted(summary.failed)[:10])
            + (" ..." if len(summary.failed) > 10 else "")
        )


def _finish(summary: TransferSummary, artifact_key: str) -> TransferSummary:
    """Log, publish the artifact and fail the run if any object failed."""
    logger = get_run_logger()
    for key, reason in summary.rejected.items():
        logger.warning("rejected key %r: %s", key, reason)
    for key, reason in summary.failed.items():
        logger.error("failed key %r: %s", key, reason)
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


def _retrying(task_obj, task_retries: int):  # noqa: ANN001, ANN202
    delays = exponential_backoff(backoff_factor=1)(task_retries) if task_retries else 0
    return task_obj.with_options(retries=task_retries, retry_delay_seconds=delays)


@flow(name="download-prefix", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
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
) -> TransferSummary:
    """Download every object under ``source`` into ``dest_dir``, keeping relative keys.

    Keys that would land outside ``dest_dir`` are rejected and reported, never written.
    Downloads are atomic and verified; identical local files are skipped.
    """
    start = time.perf_counter()
    url = parse_s3_url(source)
    dest = ensure_writable_dir(dest_dir)
    objects = list_objects_task(connection, url.bucket, url.folder, include or (), exclude or ())
    items, rejected = plan_downloads(objects, url.folder, dest)
    summary = TransferSummary(
        direction="download", source=source, destination=str(dest), dry_run=dry_run,
        rejected=rejected,
    )  # fmt: skip
    batches = make_batches(
        items, lambda i: i[0].size, batch_max_objects, batch_max_mib * 2**20, workers * 2
    )
    task_obj = _retrying(download_batch, task_retries)
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        futures = [
            runner.submit(
                task_obj,
                {
                    "conn": connection,
                    "pool_size": workers,
                    "bucket": url.bucket,
                    "items": quote(batch),
                    "skip_existing": skip_existing,
                    "dry_run": dry_run,
                },
            )  # fmt: skip
            for batch in batches
        ]
        result = gather_batches(futures, [[o.key for o, _ in b] for b in batches])
    summary.objects, summary.bytes = len(result.transferred), result.bytes
    summary.skipped, summary.failed = len(result.skipped), result.failed
    summary.planned = result.transferred if dry_run else []
    summary.seconds = time.perf_counter() - start
    return _finish(summary, "download-summary")


@flow(name="upload-directory", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
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
) -> TransferSummary:
    """Upload every file under ``source_dir`` to ``dest``, keeping relative paths as keys.

    Uploads are verified (Content-MD5, then ETag/size); identical objects are skipped.
    """
    start = time.perf_counter()
    url = parse_s3_url(dest)
    root = Path(source_dir).expanduser()
    if not root.is_dir():
        raise ConfigurationError(f"source directory {str(root)!r} does not exist")
    # Listing the destination proves the bucket is reachable and finds identical objects.
    existing = {
        o.key: (o.size, o.etag)
        for o in list_objects_task(connection, url.bucket, url.folder)
        if skip_existing
    }
    files, rejected = plan_uploads(list_local_files(root, include or (), exclude or ()), url)
    summary = TransferSummary(
        direction="upload", source=str(root.resolve()), destination=dest, dry_run=dry_run,
        rejected=rejected,
    )  # fmt: skip
    batches = make_batches(
        files, lambda f: f.size, batch_max_objects, batch_max_mib * 2**20, workers * 2
    )
    task_obj = _retrying(upload_batch, task_retries)
    with ThreadPoolTaskRunner(max_workers=workers) as runner:
        futures = [
            runner.submit(
                task_obj,
                {
                    "conn": connection,
                    "pool_size": workers,
                    "bucket": url.bucket,
                    "items": quote(batch),
                    "dry_run": dry_run,
                    "existing": quote({f.key: existing[f.key] for f in batch if f.key in existing}),
                },
            )  # fmt: skip
            for batch in batches
        ]
        result = gather_batches(futures, [[f.key for f in b] for b in batches])
    summary.objects, summary.bytes = len(result.transferred), result.bytes
    summary.skipped, summary.failed = len(result.skipped), result.failed
    summary.planned = result.transferred if dry_run else []
    summary.seconds = time.perf_counter() - start
    return _finish(summary, "upload-summary")


if __name__ == "__main__":
    from flows.cli import run_cli

    run_cli(download_prefix, upload_directory)
