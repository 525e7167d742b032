"""The event loop of ``square-objects``: chunks flow through download -> square -> upload futures.

Every submitted task's done-callback puts ``(stage, chunk, keys, future)`` on one queue; the
flow thread takes events off it and starts the chunk's next stage at once, then starts more
downloads while the scratch budget allows. No polling, no sleeps: the loop blocks on the queue
until some task finishes, and ends when no task is outstanding.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.tasks import Task
from prefect.utilities.annotations import quote

from prefect_s3_concurrency.errors import S3PipelineError, describe_error
from prefect_s3_concurrency.flows.batching import RunProgress, batch_name, cut_batches
from prefect_s3_concurrency.flows.common import batch_of, task_outcome
from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary
from prefect_s3_concurrency.flows.runners import submit
from prefect_s3_concurrency.runtime.budget import RequestBudget
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.transfer import BatchResult, LocalFile
from prefect_s3_concurrency.s3.upload_options import UploadOptions
from prefect_s3_concurrency.tasks.cpu import report_of
from prefect_s3_concurrency.transforms.planning import (
    MIB,
    Chunk,
    ScratchBudget,
    StageClock,
    WorkItem,
)
from prefect_s3_concurrency.transforms.resume import output_metadata
from prefect_s3_concurrency.transforms.square import FileStats

DOWNLOADING_CHUNKS = 2  # chunks whose downloads may be queued at once (uploads queue behind)
BATCH_MAX_BYTES = 256 * MIB
CHUNK_SHARE = 4  # a chunk's transfers are cut into at most workers / CHUNK_SHARE batches


@dataclass
class _Flight:
    """A chunk in flight: its outstanding futures and what its stages produced so far."""

    chunk: Chunk
    pending: int = 0
    batch: BatchResult = field(default_factory=BatchResult)
    stats: dict[str, FileStats] = field(default_factory=dict)
    by_dest: dict[str, WorkItem] = field(default_factory=dict)
    jobs: list[tuple[str, str, str]] = field(default_factory=list)
    runner: TaskRunner | None = None  # where its square task was submitted
    retried: bool = False


def _part(index: int, total: int) -> str:
    """`` part 2/3`` when a chunk's stage runs as several tasks (unique task-run names)."""
    return f" part {index}/{total}" if total > 1 else ""


class ChunkStreamer:
    """Drives chunks through the three stages on an I/O runner and a CPU runner.

    Args:
        io: Started thread runner for ``download`` and ``upload`` batch tasks.
        cpu: Started runner (process pool, or one flow thread) for the ``square`` task.
        budget: Scratch bytes bound; a chunk starts downloading only when it fits.
        clock: Records each task's interval per stage.
        summary: Updated in place with counts, PIDs and failures.
        logger: The flow run's logger.
        download, square, upload: The task objects (with their retry options).
        conn, pool_size: S3 connection of the source and thread count for the transfer tasks.
        dest_conn: S3 connection of the destination (None: the source's).
        source_bucket, dest_bucket: Buckets to read from and write to.
        existing: ``dest key -> (size, etag)`` of outputs whose metadata is current; an
            identical output is not uploaded again (others are, to refresh the metadata).
        transform: Transform name passed to ``square`` and recorded on every output.
        batch_max_objects: Most objects per transfer batch.
        progress: Advanced by a chunk's objects once it is squared and uploaded (or failed).
        new_cpu: Builds an unstarted process runner with ``n`` workers. When a worker
            process dies (OOM kill, ``os._exit``), the pool is broken and every chunk in it
            fails with ``BrokenProcessPool``: the streamer then starts a fresh pool for the
            chunks still to come and retries each affected chunk once, alone, on a fresh
            one-worker pool, so only the chunk that kills its worker again fails.
        square_options: Extra parameters for every ``square`` task (e.g. ``max_line_bytes``).
        engine, requests_in_flight: Transfer engine and requests in flight per batch task.
        request_budget: The shared request budget the transfer batches take slots of.
        upload_options: Headers of the uploaded outputs (Content-Type, encryption...).
    """

    def __init__(
        self, *, io: TaskRunner, cpu: TaskRunner, budget: ScratchBudget, clock: StageClock,
        summary: PipelineSummary, logger: logging.Logger | logging.LoggerAdapter,
        download: Task, square: Task, upload: Task, conn: S3Connection,
        dest_conn: S3Connection | None, pool_size: int,
        source_bucket: str, dest_bucket: str, existing: dict[str, tuple[int, str]],
        transform: str, batch_max_objects: int, progress: RunProgress | None = None,
        new_cpu: Callable[[int], TaskRunner] | None = None,
        square_options: dict[str, Any] | None = None, engine: str = "auto",
        requests_in_flight: int | None = None, upload_options: UploadOptions | None = None,
        request_budget: RequestBudget | None = None,
    ) -> None:  # fmt: skip
        self.io, self.cpu, self.budget, self.clock = io, cpu, budget, clock
        self.summary, self.logger = summary, logger
        self.tasks = {"download": download, "square": square, "upload": upload}
        self.conn, self.dest_conn, self.pool_size = conn, dest_conn or conn, pool_size
        self.engine = {"engine": engine, "requests_in_flight": requests_in_flight,
                       "request_budget": request_budget}  # fmt: skip
        self.upload_options = upload_options
        # Several chunks transfer at once (two downloading, a few uploading). Each batch task
        # has all its requests in flight (obstore) or its own threads (boto3), so a chunk gets
        # one batch per 64 objects or 64 MiB (as the transfer flows cut them), at most a
        # quarter of the threads: each task costs the flow and the API server ~0.1 s of the
        # CPU that squaring needs (8 x 32 MiB chunks took 72 tasks, now 24).
        self._spread = max(1, -(-pool_size // CHUNK_SHARE))
        self.source_bucket, self.dest_bucket = source_bucket, dest_bucket
        self.existing, self.transform = existing, transform
        self.batch_max_objects = batch_max_objects
        self.progress = progress or RunProgress("unused", "not published")
        self._events: queue.SimpleQueue[tuple[str, _Flight, list[str], PrefectFuture[Any]]]
        self._events = queue.SimpleQueue()
        self._outstanding = self._downloading = self._total = 0
        self._waiting: deque[Chunk] = deque()
        self._pids: set[int] = set()
        self._urls: set[str | None] = set()
        self._new_cpu, self._square_options = new_cpu, dict(square_options or {})
        self._cpu_workers = 1
        self._retries: deque[_Flight] = deque()
        self._quarantine: TaskRunner | None = None
        self._quarantine_busy = False
        self._started: list[TaskRunner] = []  # runners this streamer started (and closes)

    def run(self, chunks: Sequence[Chunk], warm_up: Task | None = None, workers: int = 0) -> None:
        """Stream every chunk through all stages; return when no task is outstanding.

        Args:
            chunks: The planned chunks, in the order to start them.
            warm_up: A no-op task submitted ``workers`` times to the CPU runner first, so a
                process pool starts its workers while the first downloads run.
            workers: How many warm-up tasks to submit.
        """
        self._waiting, self._total = deque(chunks), len(chunks)
        self.progress.add_total(sum(len(c.items) for c in chunks))
        self._cpu_workers = max(1, workers)
        try:
            self._loop(chunks, warm_up, workers)
        finally:
            for runner in self._started:
                runner.__exit__(None, None, None)
        self.summary.worker_pids = sorted(self._pids)
        self.summary.worker_api_urls = sorted(self._urls, key=str)

    def _loop(self, chunks: Sequence[Chunk], warm_up: Task | None, workers: int) -> None:
        if warm_up is not None and chunks:
            idle = _Flight(chunks[0])  # warm-ups belong to no chunk's stages
            for _ in range(workers):
                self._watch("warm", idle, [], submit(self.cpu, warm_up, {}))
        self._start_downloads()
        while self._outstanding:
            stage, flight, keys, future = self._events.get()
            self._outstanding -= 1
            flight.pending -= 1
            try:
                value, error = task_outcome(future)
            except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool from wait()
                value, error = None, exc
            getattr(self, f"_{stage}_done")(flight, keys, value, error)
            self._start_downloads()

    def _watch(self, stage: str, flight: _Flight, keys: list[str], future: PrefectFuture) -> None:
        self._outstanding += 1
        flight.pending += 1
        future.add_done_callback(lambda f: self._events.put((stage, flight, keys, f)))

    def _start_downloads(self) -> None:
        """Start downloading waiting chunks while few are downloading and scratch allows."""
        while (
            self._waiting
            and self._downloading < DOWNLOADING_CHUNKS
            and self.budget.fits(self._waiting[0].scratch_estimate)
        ):
            chunk = self._waiting.popleft()
            self.budget.hold(chunk.index, chunk.scratch_estimate)
            flight = _Flight(chunk)
            items = [(item.obj, item.input_path) for item in chunk.items]
            batches = cut_batches(
                items, lambda i: i[0].size, self.batch_max_objects, BATCH_MAX_BYTES, self._spread
            )
            self._downloading += 1
            for part, batch in enumerate(batches, 1):
                params = {
                    "conn": self.conn, "pool_size": self.pool_size, "bucket": self.source_bucket,
                    "items": quote(batch), "skip_existing": False, **self.engine,
                }  # fmt: skip
                label = f"download {self._of(flight)}{_part(part, len(batches))}"
                name = batch_name(label, len(batch), sum(o.size for o, _ in batch))
                task_obj = self.tasks["download"].with_options(task_run_name=name)
                future = submit(self.io, task_obj, params)
                self._watch("download", flight, [obj.key for obj, _ in batch], future)

    def _warm_done(
        self, flight: _Flight, keys: list[str], value: Any, error: BaseException | None
    ) -> None:
        if error is not None:
            self.logger.warning("a CPU worker did not start: %s", describe_error(error))

    def _download_done(
        self, flight: _Flight, keys: list[str], value: Any, error: BaseException | None
    ) -> None:
        result = batch_of(value, error)
        if result is None:
            flight.batch.failed.update({k: f"download: {describe_error(error)}" for k in keys})
        else:
            flight.batch.merge(result)
            self.clock.add("download", time.perf_counter(), result.seconds)
            self.summary.throttled += result.throttled
        if flight.pending:
            return
        self._downloading -= 1
        self.summary.failed.update(flight.batch.failed)
        done = set(flight.batch.transferred)
        jobs = [(i.key, i.input_path, i.output_path) for i in flight.chunk.items if i.key in done]
        if not jobs:
            self._release(flight)
            return
        flight.jobs = jobs
        self._submit_square(flight, self.cpu)

    def _submit_square(self, flight: _Flight, runner: TaskRunner) -> None:
        params = {"jobs": quote(flight.jobs), "transform": self.transform}
        params.update(self._square_options)
        size = sum(i.size for i in flight.chunk.items if i.key in {k for k, _, _ in flight.jobs})
        name = batch_name(f"square {self._of(flight)}", len(flight.jobs), size)
        if flight.retried:
            name += " (retry on a fresh process)"
        flight.runner = runner
        future = submit(runner, self.tasks["square"].with_options(task_run_name=name), params)
        self._watch("square", flight, [k for k, _, _ in flight.jobs], future)

    def _start(self, workers: int) -> TaskRunner:
        assert self._new_cpu is not None
        runner = self._new_cpu(workers)
        runner.__enter__()
        self._started.append(runner)
        return runner

    def _worker_died(self, flight: _Flight, keys: list[str]) -> bool:
        """Handle a chunk whose worker process died; return False if it fails for good."""
        if flight.runner is self._quarantine:  # it broke its own fresh pool: it is the cause
            self._quarantine, self._quarantine_busy = None, False
            self._next_retry()
            return False
        if self._new_cpu is None:
            return False
        if flight.runner is self.cpu:  # the shared pool is broken: later chunks get a new one
            self.logger.warning(
                "a worker process died (killed, out of memory, or the transform exited): "
                "starting a fresh process pool; affected chunks are retried one at a time"
            )
            self.cpu = self._start(self._cpu_workers)
        flight.retried = True
        self._retries.append(flight)
        self._next_retry()
        return True

    def _next_retry(self) -> None:
        """Retry the next affected chunk alone, on a fresh one-worker pool."""
        if self._quarantine_busy or not self._retries:
            return
        if self._quarantine is None:
            self._quarantine = self._start(1)
        self._quarantine_busy = True
        self._submit_square(self._retries.popleft(), self._quarantine)

    def _square_done(
        self, flight: _Flight, keys: list[str], value: Any, error: BaseException | None
    ) -> None:
        chunk = flight.chunk
        if isinstance(error, BrokenProcessPool):
            if self._worker_died(flight, keys):
                return  # retried: its inputs are still needed
            error = S3PipelineError(
                "worker process died while squaring this chunk (killed, e.g. out of memory, "
                "or the transform exited the process)"
                + ("; it died again when retried alone" if flight.retried else "")
            )
        elif flight.runner is not None and flight.runner is self._quarantine:
            self._quarantine_busy = False
            self._next_retry()
        for item in chunk.items:  # inputs are no longer needed, whatever happened
            Path(item.input_path).unlink(missing_ok=True)
        report = report_of(value, error)
        if report is None:
            self.summary.failed.update({k: f"square: {describe_error(error)}" for k in keys})
            self._release(flight)
            return
        res = report.result
        self._pids.add(res.pid)
        self._urls.add(report.api_url)
        self.clock.add("square", time.perf_counter(), res.seconds)
        self.summary.square_cpu_seconds += res.seconds
        self.summary.failed.update(res.failed)
        flight.stats = {s.key: s for s in res.ok}
        self.logger.info(
            "chunk %d/%d: squared %d objects (%.1f MiB, %d numbers) in %.2fs in process %d%s",
            chunk.index + 1, self._total, len(res.ok), res.input_bytes / MIB, res.numbers,
            res.seconds, res.pid, f"; {len(res.failed)} failed" if res.failed else "",
        )  # fmt: skip
        if not res.ok:
            self._release(flight)
            return
        self.budget.hold(chunk.index, sum(s.output_bytes for s in res.ok))
        flight.batch = BatchResult()
        files = []
        for item in chunk.items:
            if item.key in flight.stats:
                size = flight.stats[item.key].output_bytes
                meta = output_metadata(item.obj.etag, self.transform)  # enables resume
                files.append(LocalFile(item.output_path, item.dest_key, size, meta))
                flight.by_dest[item.dest_key] = item
        batches = cut_batches(
            files, lambda f: f.size, self.batch_max_objects, BATCH_MAX_BYTES, self._spread
        )
        for part, batch in enumerate(batches, 1):
            known = {f.key: self.existing[f.key] for f in batch if f.key in self.existing}
            params = {
                "conn": self.dest_conn, "pool_size": self.pool_size, "bucket": self.dest_bucket,
                "items": quote(batch), "existing": quote(known), **self.engine,
                "upload_options": self.upload_options,
            }  # fmt: skip
            label = f"upload {self._of(flight)}{_part(part, len(batches))}"
            name = batch_name(label, len(batch), sum(f.size for f in batch))
            task_obj = self.tasks["upload"].with_options(task_run_name=name)
            future = submit(self.io, task_obj, params)
            self._watch("upload", flight, [f.key for f in batch], future)

    def _upload_done(
        self, flight: _Flight, keys: list[str], value: Any, error: BaseException | None
    ) -> None:
        result = batch_of(value, error)
        if result is None:
            flight.batch.failed.update({k: describe_error(error) for k in keys})
        else:
            flight.batch.merge(result)
            self.clock.add("upload", time.perf_counter(), result.seconds)
            self.summary.throttled += result.throttled
        if flight.pending:
            return
        s = self.summary
        for dest_key, reason in flight.batch.failed.items():
            s.failed[flight.by_dest[dest_key].key] = f"upload to {dest_key}: {reason}"
        for dest_key in flight.batch.transferred + flight.batch.skipped:
            stats = flight.stats[flight.by_dest[dest_key].key]
            s.objects += 1
            s.processed += 1
            s.input_bytes += stats.input_bytes
            s.output_bytes += stats.output_bytes
            s.numbers += stats.numbers
        s.uploaded += len(flight.batch.transferred)
        s.skipped += len(flight.batch.skipped)
        self._release(flight)

    def _of(self, flight: _Flight) -> str:
        return f"chunk {flight.chunk.index + 1}/{self._total}"

    def _release(self, flight: _Flight) -> None:
        """Delete the chunk's scratch files, give its budget back and count it as done."""
        self.progress.advance(len(flight.chunk.items))
        for item in flight.chunk.items:
            Path(item.input_path).unlink(missing_ok=True)
            Path(item.output_path).unlink(missing_ok=True)
        self.budget.release(flight.chunk.index)
