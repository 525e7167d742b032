"""The steps of the transfer flows: listing into batches, recording results, deciding deletes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from prefect_s3_concurrency.errors import (
    FailedWithPayload,
    ListingError,
    printable,
    run_failure_message,
)
from prefect_s3_concurrency.flows.batching import (
    Batch,
    BatchCutter,
    RunProgress,
)
from prefect_s3_concurrency.flows.common import (
    TransferSummary,
    completed,
    headline,
    log_dry_run,
    log_key_reasons,
    publish_table,
)
from prefect_s3_concurrency.flows.events import announce_landed
from prefect_s3_concurrency.local.links import DownloadPlanner
from prefect_s3_concurrency.local.paths import S3Url, relative_key
from prefect_s3_concurrency.runtime import progress as report_progress
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import (
    open_engine,
)
from prefect_s3_concurrency.s3.transfer import (
    BatchResult,
    S3Object,
    iter_objects,
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


def batch_arguments(
    conn: S3Connection, bucket: str, workers: int, dry_run: bool, engine: str,
    requests_in_flight: int | None, budget: Any, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The keyword arguments every batch task of one transfer run shares, plus ``extra``."""
    return {"conn": conn, "pool_size": workers, "bucket": bucket, "dry_run": dry_run,
            "engine": engine, "requests_in_flight": requests_in_flight,
            "request_budget": budget, **extra}  # fmt: skip


def _record_result(summary: TransferSummary, result: BatchResult) -> None:
    """Copy a merged batch result into the run summary."""
    summary.objects, summary.bytes = len(result.transferred), result.bytes
    summary.skipped = len(result.skipped)
    summary.failed.update(result.failed)  # after any listing failure
    summary.verified_by_size_only = result.size_only
    summary.throttled = result.throttled
    summary.planned = result.transferred if summary.dry_run else []
