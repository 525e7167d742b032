"""Plain planning and book-keeping for the download -> square -> upload pipeline (no Prefect).

* :func:`plan_work` maps source objects to scratch paths and destination keys.
* :func:`plan_work_chunks` groups them into CPU chunks (seconds of work per process task).
* :func:`choose_mode` decides whether the workload pays for a process pool.
* :class:`ScratchBudget` bounds the local disk held by in-flight chunks.
* :class:`StageClock` turns task durations into per-stage busy seconds and spans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect_s3_concurrency.errors import ConfigurationError, S3PipelineError
from prefect_s3_concurrency.local.paths import (
    MAX_KEY_BYTES,
    S3Url,
    check_relative_key,
    relative_key,
)
from prefect_s3_concurrency.s3.integrity import MIB
from prefect_s3_concurrency.s3.transfer import S3Object
from prefect_s3_concurrency.transforms.square import (
    MB_PER_CPU_SECOND_20_DIGITS,
    estimate_cpu_seconds,
    plan_chunks,
)

# Upper bound of output/input size for squaring: d digits -> at most 2d digits, so a
# "<d digits>\n" line becomes at most 2d + 1 bytes. A chunk holds its input plus at most
# twice that while it is squared, and only its (measured) output after that.
OUTPUT_EXPANSION = 2.0
POOL_START_SECONDS = 2.0  # measured ProcessPoolTaskRunner start-up (spawn + imports)


@dataclass(frozen=True)
class WorkItem:
    """One source object and where it goes: scratch input/output files and destination key."""

    obj: S3Object
    dest_key: str
    input_path: str
    output_path: str

    @property
    def key(self) -> str:
        """Source object key."""
        return self.obj.key

    @property
    def size(self) -> int:
        """Source object size in bytes."""
        return self.obj.size


@dataclass(frozen=True)
class Chunk:
    """Objects squared together by one CPU task."""

    index: int
    items: tuple[WorkItem, ...]

    @property
    def input_bytes(self) -> int:
        """Total input bytes of the chunk."""
        return sum(item.size for item in self.items)

    @property
    def scratch_estimate(self) -> int:
        """Scratch bytes the chunk may hold at its peak (input plus squared output)."""
        return math.ceil(self.input_bytes * (1 + OUTPUT_EXPANSION))


def check_disjoint(source: S3Url, dest: S3Url) -> None:
    """Refuse a destination that overlaps the source, since re-runs would square outputs.

    Raises:
        ConfigurationError: If both are in one bucket and one prefix contains the other.
    """
    if source.bucket != dest.bucket:
        return
    a, b = source.folder, dest.folder
    if a.startswith(b) or b.startswith(a):
        raise ConfigurationError(
            f"destination s3://{dest.bucket}/{b} overlaps source s3://{source.bucket}/{a}: "
            "use a separate prefix"
        )


def plan_work(
    objects: Iterable[S3Object], source_folder: str, dest: S3Url, scratch: Path
) -> tuple[list[WorkItem], dict[str, str]]:
    """Pair each object with numbered scratch files and its destination key.

    Scratch names are numbers, not keys, so no key can collide with another or escape the
    scratch directory. Keys whose relative part is unsafe (``..``, absolute, NUL...) or whose
    destination key would exceed 1024 bytes are rejected.

    Returns:
        The work items in listing order, and rejected key -> reason.
    """
    items: list[WorkItem] = []
    rejected: dict[str, str] = {}
    for obj in objects:
        rel = relative_key(obj.key, source_folder)
        try:
            check_relative_key(rel)
        except S3PipelineError as exc:
            rejected[obj.key] = str(exc)
            continue
        dest_key = dest.key_for(rel)
        if len(dest_key.encode("utf-8")) > MAX_KEY_BYTES:
            rejected[obj.key] = "destination key longer than 1024 bytes"
            continue
        n = len(items)
        items.append(
            WorkItem(
                obj, dest_key, str(scratch / "in" / f"{n:07d}"), str(scratch / "out" / f"{n:07d}")
            )
        )
    return items, rejected


def plan_work_chunks(
    items: Sequence[WorkItem],
    cpu_workers: int,
    chunks_per_worker: int,
    min_chunk_bytes: int,
    max_scratch_bytes: int,
) -> list[Chunk]:
    """Group work items into balanced CPU chunks.

    Aims for ``cpu_workers * chunks_per_worker`` chunks (a few per worker, so work balances
    and squaring starts after the first chunk is downloaded), but never chunks smaller than
    ``min_chunk_bytes`` (a process task costs ~0.1-0.2 s; objects are not split, so a chunk
    can still be smaller), and small enough that ``cpu_workers + 1`` chunks fit in
    ``max_scratch_bytes`` together (unless single objects are too large for that).

    Returns:
        Chunks, heaviest first, each object in exactly one chunk.
    """
    if not items:
        return []
    if min(cpu_workers, chunks_per_worker, max_scratch_bytes) < 1:
        raise ValueError("cpu_workers, chunks_per_worker and max_scratch_bytes must be >= 1")
    total = sum(item.size for item in items)
    target = max(min_chunk_bytes, math.ceil(total / (cpu_workers * chunks_per_worker)))
    # LPT keeps every chunk within target + largest object, so leave room for that.
    fits = max_scratch_bytes / ((cpu_workers + 1) * (1 + OUTPUT_EXPANSION))
    target = max(1, min(target, int(fits) - max(item.size for item in items)))
    by_key = {item.key: item for item in items}
    groups = plan_chunks([(item.key, item.size) for item in items], target)
    return [Chunk(i, tuple(by_key[k] for k in keys)) for i, keys in enumerate(groups)]


def choose_mode(total_bytes: int, cpu_workers: int, min_process_bytes: int) -> tuple[bool, str]:
    """Decide whether to square on a process pool, and say why.

    Returns:
        ``(use_processes, reason)``; the reason is meant for the run's log.
    """
    cpu = estimate_cpu_seconds(total_bytes)
    size = (
        f"{total_bytes / MIB:.1f} MiB (~{cpu:.1f} s of CPU at {MB_PER_CPU_SECOND_20_DIGITS:g} MB/s)"
    )
    if total_bytes < min_process_bytes:
        return False, (
            f"workload of {size} is below min_process_mib={min_process_bytes / MIB:g}: squaring "
            f"in the flow process, since a process pool costs ~{POOL_START_SECONDS:g} s to start"
        )
    return True, f"workload of {size}: squaring on {cpu_workers} worker process(es)"


@dataclass
class ScratchBudget:
    """Bytes of local scratch held by in-flight chunks, bounded by ``limit``.

    A chunk holds its estimate from the start of its download, its measured output once it
    is squared (inputs deleted), and nothing once uploaded (outputs deleted). One chunk may
    always start when none is in flight, so an object larger than the limit still runs.
    """

    limit: int
    held: dict[int, int] = field(default_factory=dict)
    peak: int = 0

    @property
    def used(self) -> int:
        """Bytes currently held."""
        return sum(self.held.values())

    def fits(self, nbytes: int) -> bool:
        """Whether a chunk needing ``nbytes`` may start now."""
        return not self.held or self.used + nbytes <= self.limit

    def hold(self, chunk: int, nbytes: int) -> None:
        """Set what ``chunk`` holds (reserve, or replace an estimate by a measurement)."""
        self.held[chunk] = nbytes
        self.peak = max(self.peak, self.used)

    def release(self, chunk: int) -> None:
        """Forget ``chunk`` (its files are deleted)."""
        self.held.pop(chunk, None)


def union_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals, overlaps counted once."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


@dataclass
class StageClock:
    """Per-stage task intervals, from each task's reported duration and its completion time.

    Times are seconds since ``origin`` (e.g. the flow start, ``time.perf_counter()``).
    """

    origin: float
    intervals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, stage: str, end: float, seconds: float) -> None:
        """Record a task of ``stage`` that ended at ``end`` (perf_counter) after ``seconds``."""
        stop = end - self.origin
        self.intervals.setdefault(stage, []).append((max(0.0, stop - seconds), stop))

    def busy(self, stage: str) -> float:
        """Seconds during which at least one task of ``stage`` ran."""
        return union_seconds(self.intervals.get(stage, ()))

    def span(self, stage: str) -> tuple[float, float] | None:
        """``(first start, last end)`` of ``stage``, or None if it never ran."""
        spans = self.intervals.get(stage)
        if not spans:
            return None
        return min(s for s, _ in spans), max(e for _, e in spans)
