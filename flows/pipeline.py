"""The ``square-objects`` flow: download on threads -> square on processes -> upload on threads.

Runner structure. A flow has one task runner, so this flow opens two runner instances of its
own and composes their futures: S3 I/O (``download_batch``, ``upload_batch``) goes to a
``ThreadPoolTaskRunner(max_workers=workers)`` and squaring (``square_chunk``) to a
``ProcessPoolTaskRunner(max_workers=cpu_workers)``. A subflow with a process runner was the
alternative, but it would run its tasks as one blocking call: the flow could not upload chunk
1 while chunk 2 is squared, nor download chunk 3 meanwhile. With both runners in one flow,
every task's completion callback feeds one event loop that starts the next stage of that
chunk at once:

* chunks are a few per CPU worker, each seconds of CPU (``plan_work_chunks``); a chunk's
  download batches use all I/O threads, and at most two chunks download at a time, so
  uploads queue behind at most two chunks of downloads;
* a chunk is squared as soon as its downloads finish, and uploaded as soon as it is squared;
* local scratch is bounded: no chunk starts downloading while the chunks in flight hold, or
  may hold, more than ``max_scratch_mib`` (inputs are deleted once squared, outputs once
  uploaded), and everything lives in a temporary directory removed on success and failure.

The process pool is warmed up first (one no-op ``start_worker`` task per worker), so its ~2 s
start overlaps the first downloads instead of delaying the first square.

Ephemeral mode: workers are pointed at the flow's own API server (``shared_api_settings``),
so no worker starts a temporary server of its own. Small workloads (``min_process_mib``)
skip the process-pool start and square on one thread of the flow process instead.

Run as a script: ``python flows/pipeline.py square-objects s3://in/prefix s3://out/prefix``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import quote
from pydantic import Field

from prefect_s3_concurrency.flows.common import (
    BatchObjects,
    Globs,
    S3Uri,
    TaskRetries,
    Workers,
    ensure_writable_dir,
    log_key_reasons,
    publish_table,
)
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
from prefect_s3_concurrency.flows.streaming import ChunkStreamer
from prefect_s3_concurrency.tasks.client import S3Connection
from prefect_s3_concurrency.tasks.cpu import shared_api_settings, square_chunk, start_worker
from prefect_s3_concurrency.tasks.engines import EngineChoice, RequestsInFlight
from prefect_s3_concurrency.tasks.paths import make_batches, parse_s3_url
from prefect_s3_concurrency.tasks.pipeline import (
    MIB,
    ScratchBudget,
    StageClock,
    WorkItem,
    check_disjoint,
    choose_mode,
    plan_work,
    plan_work_chunks,
)
from prefect_s3_concurrency.tasks.resume import output_metadata
from prefect_s3_concurrency.tasks.s3 import (
    check_outputs_batch,
    download_batch,
    list_objects_task,
    remove_stale_scratch_task,
    upload_batch,
)
from prefect_s3_concurrency.tasks.square import load_transform
from prefect_s3_concurrency.tasks.tempfiles import locked_scratch_dir

DEFAULT_WORKERS = 16
SCRATCH_PREFIX = "square-objects-"

TransformSpec = Annotated[
    str,
    Field(
        min_length=1,
        max_length=300,
        pattern=r"^\s*[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?\s*$",
        description="'square' or an int -> int function as 'package.module:function'.",
    ),
]
CpuWorkers = Annotated[int, Field(ge=1, le=64, description="Worker processes for squaring.")]
MinProcessMiB = Annotated[
    float,
    Field(
        ge=0,
        le=10**7,
        description="Below this much input, square in the flow process (0: always processes).",
    ),
]
ScratchMiB = Annotated[int, Field(ge=1, le=10**8, description="Most local scratch MiB in use.")]
ChunksPerWorker = Annotated[int, Field(ge=1, le=64, description="CPU chunks per worker process.")]
MinChunkMiB = Annotated[float, Field(gt=0, le=10**6, description="Smallest CPU chunk, MiB.")]


def _retrying(task_obj, task_retries: int):
    delays = exponential_backoff(backoff_factor=1)(task_retries) if task_retries else 0
    return task_obj.with_options(retries=task_retries, retry_delay_seconds=delays)


def _cpu_runner(use_processes: bool, cpu_workers: int) -> TaskRunner[Any]:
    """A process pool for real work; one thread of the flow process for small workloads."""
    if use_processes:
        return ProcessPoolTaskRunner(max_workers=cpu_workers)
    return ThreadPoolTaskRunner(max_workers=1)


def _current_outputs(
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
        io.submit(
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


def _resume_plan(
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


def _finish(summary: PipelineSummary) -> PipelineSummary:
    """Log, publish the artifact and fail the run if any object failed."""
    logger = get_run_logger()
    log_key_reasons(summary.rejected, summary.failed)
    logger.info(
        "square-objects: %d objects (%d processed, %d uploaded, %d skipped of which %d "
        "resumed), %.1f MiB in, %.1f MiB out, "
        "%d numbers in %.2fs wall (download %.2fs, square %.2fs, upload %.2fs busy); "
        "processes=%s pids=%s; rejected %d, failed %d",
        summary.objects, summary.processed, summary.uploaded, summary.skipped, summary.resumed,
        summary.input_bytes / MIB,
        summary.output_bytes / MIB, summary.numbers, summary.wall_seconds,
        summary.download_seconds, summary.square_seconds, summary.upload_seconds,
        summary.used_processes, summary.worker_pids, len(summary.rejected), len(summary.failed),
    )  # fmt: skip
    publish_table("square-objects-summary", summary.rows(), "square-objects summary")
    if summary.failed:
        raise PipelineFailed(summary)
    return summary


@flow(name="square-objects")
def square_objects(
    source: S3Uri,
    dest: S3Uri,
    transform: TransformSpec = "square",
    workers: Workers = DEFAULT_WORKERS,
    cpu_workers: CpuWorkers = 2,
    include: Globs = None,
    exclude: Globs = None,
    min_process_mib: MinProcessMiB = 128.0,
    max_scratch_mib: ScratchMiB = 2048,
    chunks_per_worker: ChunksPerWorker = 4,
    min_chunk_mib: MinChunkMiB = 16.0,
    scratch_dir: str | None = None,
    batch_max_objects: BatchObjects = 100,
    task_retries: TaskRetries = 2,
    connection: S3Connection = S3Connection(),  # noqa: B008
    recompute: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
) -> PipelineSummary:
    """Square every integer of every object under ``source`` into ``dest``, same relative keys.

    Objects are newline-delimited integers (any size, optional sign, LF or CRLF). A bad line
    fails only its object, named with key and line number; the run then ends Failed after
    publishing its summary. An output is uploaded only once complete (one PUT; multipart
    from 16 MiB, which S3 also publishes atomically), so re-runs are idempotent.

    Resume: each output records its input's ETag and the transform as user metadata. A re-run
    (after a failure or a kill) skips, without downloading or squaring, every input whose
    output records the same ETag and transform; ``recompute=True`` squares everything again
    (identical outputs are still not re-uploaded). Scratch directories left by killed runs
    are removed at the start. ``engine`` and ``requests_in_flight`` choose the transfer
    engine of the S3 stages and the requests each batch task keeps in flight.
    """
    start = time.perf_counter()
    logger = get_run_logger()
    src, dst = parse_s3_url(source), parse_s3_url(dest)
    check_disjoint(src, dst)
    name, _ = load_transform(transform)  # a bad spec fails now, before any transfer
    scratch_root = ensure_writable_dir(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
    stale = remove_stale_scratch_task(str(scratch_root), SCRATCH_PREFIX)
    objects = list_objects_task(connection, src.bucket, src.folder, include or (), exclude or ())
    # Listing the destination proves it is reachable and finds outputs already in place.
    existing = {
        o.key: (o.size, o.etag) for o in list_objects_task(connection, dst.bucket, dst.folder)
    }
    summary = PipelineSummary(
        source=source, destination=dest, transform=name, cpu_workers=cpu_workers,
        flow_pid=os.getpid(), max_scratch_bytes=max_scratch_mib * MIB,
        stale_scratch_removed=len(stale),
    )  # fmt: skip
    if not objects:
        logger.warning("no objects under %s", source)
    with (
        locked_scratch_dir(SCRATCH_PREFIX, scratch_root) as tmp,
        shared_api_settings() as summary.api_url,
        ThreadPoolTaskRunner[Any](max_workers=workers) as io,
    ):
        items, summary.rejected = plan_work(objects, src.folder, dst, tmp)
        checks = [
            (i.dest_key, output_metadata(i.obj.etag, name))
            for i in items
            if i.dest_key in existing and i.obj.etag
        ]
        current = _current_outputs(io, connection, workers, dst.bucket, checks, batch_max_objects)
        items, upload_existing = _resume_plan(items, current, existing, recompute)
        summary.resumed = len(current) if not recompute else 0
        summary.objects = summary.skipped = summary.resumed
        chunks = plan_work_chunks(
            items, cpu_workers, chunks_per_worker, int(min_chunk_mib * MIB), max_scratch_mib * MIB
        )
        use_processes, summary.mode_reason = choose_mode(
            sum(i.size for i in items), cpu_workers, int(min_process_mib * MIB)
        )
        summary.used_processes, summary.chunks = use_processes and bool(chunks), len(chunks)
        logger.info(
            "%s; %d objects in %d chunks (%d resumed: output current)",
            summary.mode_reason, len(items), len(chunks), summary.resumed,
        )  # fmt: skip
        budget, clock = ScratchBudget(max_scratch_mib * MIB), StageClock(start)
        cpu_ctx: contextlib.AbstractContextManager[Any] = (
            _cpu_runner(use_processes, cpu_workers) if chunks else contextlib.nullcontext()
        )
        with cpu_ctx as cpu:
            streamer = ChunkStreamer(
                io=io, cpu=cpu, budget=budget, clock=clock, summary=summary, logger=logger,
                download=_retrying(download_batch, task_retries),
                square=square_chunk, upload=_retrying(upload_batch, task_retries),
                conn=connection, pool_size=workers, source_bucket=src.bucket,
                dest_bucket=dst.bucket, existing=upload_existing, transform=name,
                batch_max_objects=batch_max_objects, engine=engine,
                requests_in_flight=requests_in_flight,
            )  # fmt: skip
            streamer.run(chunks, start_worker if use_processes else None, cpu_workers)
    summary.peak_scratch_bytes = budget.peak
    for stage in ("download", "square", "upload"):
        setattr(summary, f"{stage}_seconds", clock.busy(stage))
        span = clock.span(stage)
        if span:
            summary.stage_spans[stage] = [round(span[0], 4), round(span[1], 4)]
    summary.wall_seconds = time.perf_counter() - start
    return _finish(summary)


if __name__ == "__main__":
    from prefect_s3_concurrency.flows.cli import run_cli

    run_cli(square_objects)
