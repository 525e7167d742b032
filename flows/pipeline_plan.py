"""Planning a ``square-objects`` run before any byte moves: list both sides, find the outputs
that are current (resume), cut the rest into CPU chunks and choose where to square them."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote

from prefect_s3_concurrency.flows.common import Globs, check_not_empty
from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary
from prefect_s3_concurrency.flows.runners import submit
from prefect_s3_concurrency.local.paths import S3Url, make_batches
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.hints import exact_key_hint
from prefect_s3_concurrency.s3.transfer import S3Object
from prefect_s3_concurrency.tasks.s3 import check_outputs_batch, list_objects_task
from prefect_s3_concurrency.transforms.planning import (
    MIB,
    Chunk,
    WorkItem,
    choose_mode,
    plan_work_chunks,
)


def current_outputs(
    io: TaskRunner,
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    checks: list[tuple[str, dict[str, str]]],
    batch_max_objects: int,
) -> set[str]:
    """Run the HEAD checks of existing outputs on the I/O threads; return the current keys."""
    logger = get_run_logger()
    batches = make_batches(checks, lambda _: 1, batch_max_objects, batch_max_objects, pool_size)
    futures = [
        submit(
            io,
            check_outputs_batch,
            {"conn": conn, "pool_size": pool_size, "bucket": bucket, "items": quote(batch)},
        )
        for batch in batches
    ]
    current: set[str] = set()
    unchecked = 0
    for future in futures:
        future.wait()
        if not future.state.is_completed():  # nothing proven current: recompute the batch
            logger.warning("could not check outputs: %s", future.state.message)
            continue
        keys, failed = future.result()
        current.update(keys)
        unchecked += len(failed)
    if unchecked:
        logger.warning("%d existing output(s) could not be checked: recomputing them", unchecked)
    return current


def resume_plan(
    items: list[WorkItem],
    current: set[str],
    existing: dict[str, tuple[int, str]],
    recompute: bool,
) -> tuple[list[WorkItem], dict[str, tuple[int, str]]]:
    """Split off resumed items; return the items to process and the outputs to keep if equal.

    Without ``recompute``, items whose output is current are dropped; any other existing
    output is stale (or lacks metadata), so it is uploaded again even if identical, which
    refreshes its metadata. With ``recompute``, all items are processed and current outputs
    are not re-uploaded when identical.
    """
    if recompute:
        return items, {k: existing[k] for k in current}
    return [i for i in items if i.dest_key not in current], {}


@dataclass(frozen=True)
class CpuPlan:
    """The run's CPU-stage parameters (see :mod:`prefect_s3_concurrency.parameters`)."""

    workers: int
    chunks_per_worker: int
    min_chunk_mib: float
    min_process_mib: float
    max_scratch_mib: int


def plan_chunks(
    items: list[WorkItem], cpu: CpuPlan, summary: PipelineSummary, resumed: int
) -> tuple[list[Chunk], bool]:
    """Cut the items to process into chunks and choose where to square them; log the plan.

    Returns:
        The chunks (heaviest first) and whether they are squared on a process pool.
    """
    summary.resumed = resumed
    summary.objects = summary.skipped = resumed
    chunks = plan_work_chunks(
        items, cpu.workers, cpu.chunks_per_worker, int(cpu.min_chunk_mib * MIB),
        cpu.max_scratch_mib * MIB,
    )  # fmt: skip
    use_processes, summary.mode_reason = choose_mode(
        sum(i.size for i in items), cpu.workers, int(cpu.min_process_mib * MIB)
    )
    summary.used_processes, summary.chunks = use_processes and bool(chunks), len(chunks)
    get_run_logger().info(
        "%s; %d objects in %d chunks (%d resumed: output current)",
        summary.mode_reason, len(items), len(chunks), resumed,
    )  # fmt: skip
    return chunks, use_processes


def list_both(
    src_conn: S3Connection,
    src: S3Url,
    dst_conn: S3Connection,
    dst: S3Url,
    globs: tuple[Globs, Globs],
    fail_if_empty: bool,
) -> tuple[list[S3Object], dict[str, tuple[int, str]]]:
    """List the source (``globs``: include, exclude) and the destination.

    Listing the destination proves it is reachable and finds the outputs already in place.

    Returns:
        The source objects, and ``dest key -> (size, ETag)`` of the existing outputs.
    """
    include, exclude = globs
    objects = list_objects_task(src_conn, src.bucket, src.folder, include or (), exclude or ())
    hint = "" if objects else exact_key_hint(src_conn, src)
    check_not_empty(len(objects), str(src), fail_if_empty, hint)
    listed = list_objects_task(dst_conn, dst.bucket, dst.folder)
    return objects, {o.key: (o.size, o.etag) for o in listed}
