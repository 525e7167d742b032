"""Batch tasks from a stream: cut batches as a listing pages, keep a bounded number in flight,
name each task run after what it holds, and keep a progress artifact up to date.

Nothing here holds the whole listing: a batch's items are released once its task finished, so
a flow over 100k objects holds a few batches of records and futures, not 100k of them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

from prefect import get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.tasks import Task

from prefect_s3_concurrency.errors import describe_error
from prefect_s3_concurrency.flows.common import batch_of, task_outcome
from prefect_s3_concurrency.flows.runners import submit
from prefect_s3_concurrency.local.paths import make_batches
from prefect_s3_concurrency.runtime import interrupt
from prefect_s3_concurrency.s3.integrity import MIB
from prefect_s3_concurrency.s3.records import BatchResult

T = TypeVar("T")
MIN_BATCH_OBJECTS = 64  # a batch holds at least this many objects, or MIN_BATCH_BYTES
MIN_BATCH_BYTES = 64 * MIB
PROGRESS_EVERY_SECONDS = 1.0  # most one progress update per second (plus the final one)
IN_FLIGHT_PER_WORKER = 2  # batch tasks submitted per worker thread before waiting for one


class RunProgress:
    """A Prefect progress artifact: the share of objects done, 0 to 100.

    Outside a flow run it only counts. While the total is still growing (a listing still
    pages), the share is of the objects known so far and never goes down.
    """

    def __init__(self, key: str, description: str) -> None:
        from prefect.artifacts import create_progress_artifact
        from prefect.context import FlowRunContext

        self.done = self.total = 0
        self.percent = 0.0
        self._last = 0.0
        self._id: UUID | None = None
        if FlowRunContext.get() is not None:
            self._id = cast(UUID, create_progress_artifact(0.0, key=key, description=description))

    def add_total(self, count: int) -> None:
        """Count ``count`` more objects to do."""
        self.total += count

    def advance(self, count: int) -> None:
        """Count ``count`` objects done; publish at most once a second."""
        self.done += count
        share = 100.0 * self.done / max(1, self.total)
        self._publish(max(self.percent, min(100.0, share)), force=False)

    def finish(self, success: bool) -> None:
        """Publish the final share: 100 after a successful run, else the share done (never
        100: a failed run is not complete, whatever share of it succeeded)."""
        self._publish(100.0 if success else min(self.percent, 99.9), force=True)

    def _publish(self, percent: float, force: bool) -> None:
        self.percent = percent
        now = time.monotonic()
        if self._id is not None and (force or now - self._last >= PROGRESS_EVERY_SECONDS):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._id, self.percent)
            self._last = now


def spread(count: int, nbytes: int, workers: int) -> int:
    """How many batches to cut ``count`` objects of ``nbytes`` into: one per worker at most,
    but never so many that a batch holds fewer than 64 objects and less than 64 MiB."""
    return max(1, min(workers, max(count // MIN_BATCH_OBJECTS, nbytes // MIN_BATCH_BYTES)))


def cut_batches(
    items: list[T], size_of: Callable[[T], int], max_objects: int, max_bytes: int, workers: int
) -> list[list[T]]:
    """Cut a whole list into batches, spread over the workers as far as :func:`spread` allows."""
    share = spread(len(items), sum(size_of(i) for i in items), workers)
    return make_batches(items, size_of, max_objects, max_bytes, share)


class BatchCutter(Generic[T]):
    """Cut a stream of items into batches as it arrives.

    While the stream lasts, full batches (``max_objects`` or ``max_bytes``) are cut once
    ``workers`` batches' worth is buffered; at its end the rest is cut with :func:`cut_batches`.
    """

    def __init__(
        self, size_of: Callable[[T], int], max_objects: int, max_bytes: int, workers: int
    ) -> None:
        self.size_of, self.max_objects, self.max_bytes = size_of, max_objects, max_bytes
        self.workers = workers
        self._buffer: list[T] = []
        self._bytes = 0

    def add(self, items: Iterable[T]) -> Iterator[list[T]]:
        """Buffer ``items``; yield the batches that are now full."""
        for item in items:
            self._buffer.append(item)
            self._bytes += self.size_of(item)
        while (
            len(self._buffer) >= self.workers * self.max_objects
            or self._bytes >= self.workers * self.max_bytes
        ):
            batch = make_batches(self._buffer, self.size_of, self.max_objects, self.max_bytes)[0]
            del self._buffer[: len(batch)]
            self._bytes -= sum(self.size_of(i) for i in batch)
            yield batch

    def finish(self) -> Iterator[list[T]]:
        """Yield the buffered rest, spread over the workers."""
        rest, self._buffer, self._bytes = self._buffer, [], 0
        yield from cut_batches(rest, self.size_of, self.max_objects, self.max_bytes, self.workers)


@dataclass
class Batch:
    """One batch task to submit: its parameters and what it holds."""

    params: dict[str, Any]
    keys: list[str]
    size: int


def batch_name(label: str, objects: int, size: int) -> str:
    """A task run name saying what a task holds, e.g. ``download 3/16: 100 objects, 6.4 MiB``."""
    noun = "object" if objects == 1 else "objects"
    return f"{label}: {objects} {noun}, {size / MIB:.1f} MiB"


def ordinal(index: int, total: int | None) -> str:
    """``3/16``; ``3`` when the total is not known before the first batch starts (a listing
    still paging): then every batch of the run is named without it, for consistency."""
    return f"{index}/{total}" if total else str(index)


def run_batches(
    runner: TaskRunner[Any],
    task_obj: Task[Any, Any],
    verb: str,
    batches: Iterable[Batch],
    progress: RunProgress,
    limit: int,
    total: Callable[[], int | None] = lambda: None,
) -> BatchResult:
    """Submit one task per batch, at most ``limit`` in flight, and merge their results.

    Args:
        runner: A started task runner.
        task_obj: The batch task (with its retry options).
        verb: First word of each task run's name.
        batches: Batches in submission order; may be a generator fed by a listing.
        progress: Advanced by each batch's object count as it finishes.
        limit: Most batch tasks submitted and not yet finished.
        total: Returns the number of batches once known (for ``3/16`` in names), else None.

    Returns:
        The merged result. A crashed batch's keys become failures; an error raised by
        ``batches`` itself is raised again once every submitted batch has finished.
    """
    merged = BatchResult()
    flight: deque[tuple[PrefectFuture[Any], Batch]] = deque()
    index = 0
    known = total()  # named n/total only if the total is known from the start
    try:
        for batch in batches:
            if interrupt.stopping():  # Ctrl-C or SIGTERM: submit nothing more
                break
            if len(flight) >= limit:
                _collect(flight.popleft(), merged, progress)
            index += 1
            name = batch_name(f"{verb} {ordinal(index, known)}", len(batch.keys), batch.size)
            future = submit(runner, task_obj.with_options(task_run_name=name), batch.params)
            flight.append((future, batch))
    finally:
        while flight:
            _collect(flight.popleft(), merged, progress)
    get_run_logger().info("%s: %d batch task(s) finished", verb, index)
    return merged


def _collect(
    entry: tuple[PrefectFuture[Any], Batch], merged: BatchResult, progress: RunProgress
) -> None:
    future, batch = entry
    value, error = task_outcome(future)
    result = batch_of(value, error)
    if result is not None:
        merged.merge(result)
        progress.advance(len(batch.keys) - len(result.failed))  # the share done, not failed
    else:
        merged.failed.update(dict.fromkeys(batch.keys, describe_error(error)))
