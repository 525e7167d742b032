"""How many transfer tasks square-objects submits per chunk (each costs the flow and the API
server ~0.1 s of the CPU that squaring needs): one batch per 64 objects or 64 MiB, like the
transfer flows, at most a quarter of the I/O threads. No S3 and no task runs here."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future
from typing import Any

import pytest

from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary
from prefect_s3_concurrency.flows.streaming import ChunkStreamer
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.transfer import S3Object
from prefect_s3_concurrency.tasks.cpu import square_chunk
from prefect_s3_concurrency.tasks.s3 import download_batch, upload_batch
from prefect_s3_concurrency.transforms.planning import (
    MIB,
    Chunk,
    ScratchBudget,
    StageClock,
    WorkItem,
)


class _Recorder:
    """A runner that records what is submitted and never runs it."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, task_obj: Any, params: dict[str, Any]) -> Future:
        self.submitted.append(params)
        return Future()


def _chunk(count: int, size: int) -> Chunk:
    items = tuple(
        WorkItem(S3Object(f"k{n}", size, "e"), f"out/k{n}", f"/nowhere/in/{n}", f"/nowhere/{n}")
        for n in range(count)
    )
    return Chunk(0, items)


@pytest.mark.parametrize(
    ("count", "size", "batches"),
    [
        (8, 4 * MIB, 1),  # a 32 MiB chunk of the benchmark: was 4 tasks
        (192, 64 * 1024, 3),  # small objects: one batch per 64 of them
        (300, 64 * 1024, 4),  # never more than a quarter of the 16 threads
        (3, 100 * MIB, 3),  # large objects: one batch per 64 MiB
    ],
)
def test_a_chunk_downloads_in_one_batch_per_64_objects_or_64_mib(
    count: int, size: int, batches: int
) -> None:
    io: Any = _Recorder()
    streamer = ChunkStreamer(
        io=io, cpu=io, budget=ScratchBudget(2**40), clock=StageClock(0.0),
        summary=PipelineSummary(source="s3://a/in", destination="s3://b/out", transform="square"),
        logger=logging.getLogger("test"), download=download_batch, square=square_chunk,
        upload=upload_batch, conn=S3Connection(), dest_conn=None, pool_size=16,
        source_bucket="a", dest_bucket="b", existing={}, transform="square",
        batch_max_objects=100,
    )  # fmt: skip
    streamer._waiting = deque([_chunk(count, size)])
    streamer._start_downloads()
    sent = [params["items"].unquote() for params in io.submitted]
    assert len(sent) == batches
    assert sorted(obj.key for batch in sent for obj, _ in batch) == sorted(
        f"k{n}" for n in range(count)
    )
