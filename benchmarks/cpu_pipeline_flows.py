"""Prefect flows of the CPU-stage and pipeline benchmark (kept apart so that spawned plain
``ProcessPoolExecutor`` workers of ``benchmarks.cpu_pipeline`` need not import Prefect)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from prefect_s3_concurrency.flows.runners import fresh_process_pool
from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.local.paths import parse_s3_url
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.transfer import S3Object
from prefect_s3_concurrency.tasks.cpu import shared_api_settings, square_chunk, start_worker
from prefect_s3_concurrency.transforms.planning import MIB, choose_mode, plan_work, plan_work_chunks

Jobs = list[tuple[str, str, str]]


@flow(name="bench-square-chunks")
def square_chunks_on(kind: str, workers: int, chunks: list[Jobs]) -> dict[str, Any]:
    """Square every chunk as a ``square_chunk`` task on a ``kind`` runner (threads/processes).

    Processes are the project's own pool (``fresh_process_pool``: its worker start-up
    included) started as the pipeline starts it: one ``start_worker`` task per worker.

    Returns:
        ``startup_s`` (runner start and warm-up tasks), ``stage_s`` (the chunks, once the
        workers are up), ``total_s`` (both, and the shutdown), the PIDs, and the seconds the
        chunks took inside their tasks (``task_cpu_s``).
    """
    start = time.perf_counter()
    runner: TaskRunner = (
        fresh_process_pool(workers)
        if kind == "processes"
        else ThreadPoolTaskRunner(max_workers=workers)
    )
    with shared_api_settings(), runner as active:
        warm = [active.submit(start_worker, {}) for _ in range(workers) if kind == "processes"]
        warm_pids = sorted({f.result() for f in warm})
        ready = time.perf_counter()
        futures = [active.submit(square_chunk, {"jobs": jobs}) for jobs in chunks]
        reports = [f.result() for f in futures]
        done = time.perf_counter()
    failed = [k for r in reports for k in r.result.failed]
    if failed:
        raise RuntimeError(f"squaring failed for {failed[:3]}")
    pids = sorted({r.result.pid for r in reports})
    end = time.perf_counter()
    return {
        "startup_s": ready - start, "stage_s": done - ready, "total_s": end - start,
        "shutdown_s": end - done, "pids": pids, "warm_pids": warm_pids,
        "task_cpu_s": sum(r.result.seconds for r in reports),
    }  # fmt: skip


@flow(name="bench-stages-one-after-another")
def stages_one_after_another(
    source: str, dest: str, work_dir: str, workers: int, cpu_workers: int, conn: S3Connection
) -> dict[str, float]:
    """Download everything, then square everything, then upload everything; time each stage."""
    work = Path(work_dir)
    times: dict[str, float] = {}
    start = time.perf_counter()
    download_prefix(source, str(work / "in"), workers=workers, connection=conn)
    times["download_s"] = time.perf_counter() - start
    start = time.perf_counter()
    files = sorted((work / "in").iterdir())
    objects = [S3Object(p.name, p.stat().st_size) for p in files]
    items, _ = plan_work(objects, "", parse_s3_url(dest), work / "scratch")
    # The same decisions the pipeline makes with its defaults: mode, then chunks.
    use_processes, _ = choose_mode(sum(i.size for i in items), cpu_workers, 128 * MIB)
    chunks = plan_work_chunks(items, cpu_workers, 4, 16 * MIB, 2048 * MIB)
    jobs = [
        [(i.key, str(work / "in" / i.key), str(work / "out" / i.key)) for i in c.items]
        for c in chunks
    ]
    if use_processes:
        square_chunks_on("processes", cpu_workers, jobs)
    else:
        square_chunks_on("threads", 1, jobs)
    times["square_s"] = time.perf_counter() - start
    start = time.perf_counter()
    upload_directory(str(work / "out"), dest, workers=workers, connection=conn)
    times["upload_s"] = time.perf_counter() - start
    return times


@contextlib.contextmanager
def quiet_prefect(enabled: bool) -> Iterator[None]:
    """Temporary Prefect server for every flow; console handlers raised to WARNING."""
    from prefect.testing.utilities import prefect_test_harness

    handlers = list(logging.getLogger().handlers) if enabled else []
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    saved = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry: loopback only
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)
        if saved is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = saved
