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

Run as a script: ``python flows/pipeline.py square s3://in/prefix s3://out/prefix`` (the
``prefect-s3`` command line).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from pydantic import AfterValidator, Field

from prefect_s3_concurrency.flows.batching import RunProgress
from prefect_s3_concurrency.flows.common import (
    DEFAULT_WORKERS,
    BatchObjects,
    Globs,
    S3Location,
    TaskRetries,
    Workers,
    completed,
    ensure_writable_dir,
    headline,
    log_key_reasons,
    publish_table,
    resolve_location,
    retrying,
    run_name,
)
from prefect_s3_concurrency.flows.events import announce_landed
from prefect_s3_concurrency.flows.pipeline_plan import (
    CpuPlan,
    current_outputs,
    list_both,
    plan_chunks,
    resume_plan,
)
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
from prefect_s3_concurrency.flows.runners import (
    DaskAddress,
    cpu_runner,
    fresh_process_pool,
    io_runner,
)
from prefect_s3_concurrency.flows.streaming import ChunkStreamer
from prefect_s3_concurrency.local.tempfiles import locked_scratch_dir
from prefect_s3_concurrency.parameters import (
    ChunksPerWorker,
    CpuWorkers,
    MaxLineBytes,
    MinChunkMiB,
    MinProcessMiB,
    ScratchMiB,
    documented,
)
from prefect_s3_concurrency.runtime.budget import RequestBudgetName, resolve_budget
from prefect_s3_concurrency.runtime.redact import install_log_redaction
from prefect_s3_concurrency.s3.connection import CredentialsBlock, S3Connection
from prefect_s3_concurrency.s3.engines import EngineChoice, RequestsInFlight, in_flight_for
from prefect_s3_concurrency.s3.upload_options import UploadOptions
from prefect_s3_concurrency.tasks.cpu import shared_api_settings, square_chunk, start_worker
from prefect_s3_concurrency.tasks.s3 import (
    download_batch,
    remove_stale_scratch_task,
    upload_batch,
)
from prefect_s3_concurrency.transforms.planning import (
    MIB,
    Chunk,
    ScratchBudget,
    StageClock,
    check_disjoint,
    plan_work,
)
from prefect_s3_concurrency.transforms.registry import check_transform_name, load_transform
from prefect_s3_concurrency.transforms.resume import output_metadata
from prefect_s3_concurrency.transforms.square import DEFAULT_MAX_LINE_BYTES

SCRATCH_PREFIX = "square-objects-"

TransformSpec = Annotated[
    str,
    Field(
        min_length=1,
        max_length=300,
        pattern=r"^\s*[\w.:-]+\s*$",
        description="A registered transform: 'square', or a name registered by the "
        "'prefect_s3_concurrency.transforms' entry-point group or PREFECT_S3_TRANSFORMS.",
    ),
    AfterValidator(check_transform_name),
]
DaskStages = Annotated[
    tuple[Literal["io", "cpu"], ...],
    Field(description="Stages that run on the Dask cluster when dask_address is set."),
]


def _cpu_runner(
    chunks: list[Chunk],
    use_processes: bool,
    cpu_workers: int,
    dask_address: str | None,
    dask_stages: tuple[str, ...],
) -> contextlib.AbstractContextManager[Any]:
    """The runner the chunks are squared on (nothing to start when there is no chunk)."""
    if not chunks:
        return contextlib.nullcontext()
    return cpu_runner(use_processes, cpu_workers, dask_address if "cpu" in dask_stages else None)


def _record_stages(summary: PipelineSummary, clock: StageClock) -> None:
    """Copy each stage's busy seconds and span from the clock into the summary."""
    for stage in ("download", "square", "upload"):
        setattr(summary, f"{stage}_seconds", clock.busy(stage))
        span = clock.span(stage)
        if span:
            summary.stage_spans[stage] = [round(span[0], 4), round(span[1], 4)]


def _finish(summary: PipelineSummary, allow_rejected: bool = False) -> PipelineSummary:
    """Log, publish the artifact and fail the run if any object failed or was rejected."""
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
    if summary.failed or (summary.rejected and not allow_rejected):
        raise PipelineFailed(summary, allow_rejected)
    announce_landed(summary)  # prefect-s3.objects.landed: starts chained deployments
    numbers = headline(summary.objects, summary.input_bytes, summary.wall_seconds)
    return completed(summary, f"{numbers}, {summary.numbers} numbers")


@flow(name="square-objects", flow_run_name=run_name("square", "source", "dest"))
@documented
def square_objects(
    source: S3Location,
    dest: S3Location,
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
    credentials: CredentialsBlock | None = None,
    connection: S3Connection = S3Connection(),  # noqa: B008 - frozen, shared safely
    recompute: bool = False,
    fail_if_empty: bool = False,
    dask_address: DaskAddress = None,
    dask_stages: DaskStages = ("cpu",),
    allow_rejected: bool = False,
    max_line_bytes: MaxLineBytes = DEFAULT_MAX_LINE_BYTES,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
    upload_options: UploadOptions = UploadOptions(),  # noqa: B008 - frozen, shared safely
    request_budget: RequestBudgetName = None,
) -> PipelineSummary:
    """Square every integer of every object under ``source`` into ``dest``, same relative keys.

    Objects are newline-delimited integers (any size, optional sign, LF or CRLF). A bad line,
    or one longer than ``max_line_bytes`` (16 MiB), fails only its object, named with key
    and line number; the run then ends Failed after
    publishing its summary. An output is uploaded only once complete (one PUT; multipart
    from 16 MiB, which S3 also publishes atomically), so re-runs are idempotent.

    Resume: each output records its input's ETag and the transform as user metadata. A re-run
    (after a failure or a kill) skips, without downloading or squaring, every input whose
    output records the same ETag and transform; ``recompute=True`` squares everything again
    (identical outputs are still not re-uploaded). Scratch directories left by killed runs
    are removed at the start.

    Args:
        source: Objects to read: s3://bucket/prefix, or an S3Bucket block (bucket and folder).
        dest: Where outputs go: s3://bucket/prefix, or an S3Bucket block; must not overlap source.
        transform: The transform: 'square', or one registered for this deployment.
        include: Only keys (relative to the prefix) matching one of these globs.
        exclude: Skip keys matching any of these globs.
        scratch_dir: Local directory for scratch files; the system temp directory if empty.
        credentials: AWS or MinIO credentials block; empty means the default AWS chain.
        connection: Endpoint, region and botocore retry settings.
        recompute: Square everything again, even outputs that are current.
        fail_if_empty: Fail the run when the source holds no matching object.
        dask_address: Dask cluster for the stages named in dask_stages (squaring reads and
            writes scratch_dir, so remote workers need it on shared storage).
        dask_stages: Which stages run on the Dask cluster: 'cpu' (squaring), 'io' (transfers).
        allow_rejected: Let the run succeed although some keys were rejected (unsafe paths,
            folder markers holding data).
        engine: Transfer engine of the S3 stages: auto (the fastest available), obstore, boto3.
        upload_options: Content-Type (guessed from each key's name by default), server-side
            encryption, storage class and Cache-Control of the outputs.
        request_budget: A Prefect global concurrency limit shared with other runs: each
            transfer batch holds one slot per request it may have in flight.

    The bounded numbers (workers, batch and CPU sizes, retries) are described where they are
    declared, in :mod:`prefect_s3_concurrency.parameters`.
    """
    install_log_redaction()  # before any library logs a request
    start = time.perf_counter()
    requests = resolve_budget(request_budget, in_flight_for(engine, requests_in_flight))
    connection = connection.with_credentials(credentials)
    (src, src_conn), (dst, dst_conn) = (
        resolve_location(source, connection),
        resolve_location(dest, connection),
    )
    check_disjoint(src, dst)
    name, _ = load_transform(transform)  # a bad spec fails now, before any transfer
    scratch_root = ensure_writable_dir(scratch_dir) if scratch_dir else Path(tempfile.gettempdir())
    stale = remove_stale_scratch_task(str(scratch_root), SCRATCH_PREFIX)
    objects, existing = list_both(src_conn, src, dst_conn, dst, (include, exclude), fail_if_empty)
    summary = PipelineSummary(
        source=str(src), destination=str(dst), transform=name, cpu_workers=cpu_workers,
        flow_pid=os.getpid(), max_scratch_bytes=max_scratch_mib * MIB,
        stale_scratch_removed=len(stale),
    )  # fmt: skip
    budget, clock = ScratchBudget(max_scratch_mib * MIB), StageClock(start)
    with (
        locked_scratch_dir(SCRATCH_PREFIX, scratch_root) as tmp,
        shared_api_settings() as summary.api_url,
        io_runner(workers, dask_address if "io" in dask_stages else None) as io,
    ):
        items, summary.rejected = plan_work(objects, src.folder, dst, tmp)
        checks = [
            (i.dest_key, output_metadata(i.obj.etag, name))
            for i in items
            if i.dest_key in existing and i.obj.etag
        ]
        current = current_outputs(io, dst_conn, workers, dst.bucket, checks, batch_max_objects)
        items, upload_existing = resume_plan(items, current, existing, recompute)
        resumed = 0 if recompute else len(current)
        plan = CpuPlan(
            cpu_workers, chunks_per_worker, min_chunk_mib, min_process_mib, max_scratch_mib
        )
        chunks, use_processes = plan_chunks(items, plan, summary, resumed)
        progress = RunProgress("square-objects-progress", f"objects squared and uploaded: {src}")
        progress.add_total(resumed)
        progress.advance(resumed)
        with _cpu_runner(chunks, use_processes, cpu_workers, dask_address, dask_stages) as cpu_run:
            warm = use_processes and not (dask_address and "cpu" in dask_stages)
            streamer = ChunkStreamer(
                io=io, cpu=cpu_run, budget=budget, clock=clock, summary=summary,
                logger=get_run_logger(), download=retrying(download_batch, task_retries),
                square=square_chunk, upload=retrying(upload_batch, task_retries),
                conn=src_conn, dest_conn=dst_conn, pool_size=workers, source_bucket=src.bucket,
                dest_bucket=dst.bucket, existing=upload_existing, transform=name,
                batch_max_objects=batch_max_objects, progress=progress,
                new_cpu=fresh_process_pool if warm else None,
                square_options={"max_line_bytes": max_line_bytes}, engine=engine,
                requests_in_flight=requests_in_flight, upload_options=upload_options,
                request_budget=requests,
            )  # fmt: skip
            streamer.run(chunks, start_worker if warm else None, cpu_workers)
    summary.peak_scratch_bytes = budget.peak
    progress.finish(success=not summary.failed and (allow_rejected or not summary.rejected))
    _record_stages(summary, clock)
    summary.wall_seconds = time.perf_counter() - start
    return _finish(summary, allow_rejected)


if __name__ == "__main__":
    from prefect_s3_concurrency.cli import main

    raise SystemExit(main())
