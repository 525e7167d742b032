"""Prefect wrappers for the CPU stage, and the settings that let process workers share an API.

``square_chunk`` runs :func:`transforms.square.transform_files` on a chunk of *local* files, in a
``ProcessPoolTaskRunner`` worker (or, for small workloads, on a thread of the flow process).
Arguments and the result are small (paths in, counts out); workers never touch S3.

``shared_api_settings`` fixes Prefect's ephemeral mode for process workers: with no
``PREFECT_API_URL`` the flow talks to a temporary server it started itself, and each
spawned worker, seeing no URL either, would start its own (~10 s each, ~30x slower). The
``ProcessPoolTaskRunner`` builds each worker's environment and settings context from the
*current* settings at submit time, so pinning ``PREFECT_API_URL`` to the flow's own server
around the runner makes every worker report to that same server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from prefect_s3_concurrency.errors import FailedWithPayload, objects_failed
from prefect_s3_concurrency.transforms.square import (
    DEFAULT_MAX_LINE_BYTES,
    ChunkResult,
    transform_files,
)


@dataclass(frozen=True)
class ChunkReport:
    """What one ``square_chunk`` task did, and which Prefect API its process reported to.

    Attributes:
        result: Per-object stats and failures, the worker's PID and the chunk's seconds.
        api_url: ``PREFECT_API_URL`` as the worker's settings saw it (None if unset).
    """

    result: ChunkResult
    api_url: str | None


def current_api_url() -> str | None:
    """Return the Prefect API URL this process's settings resolve to, without a slash."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def flow_api_url() -> str | None:
    """Return the API URL the running flow's client uses (the ephemeral server's, too)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(ctx, "client", None)
    url = getattr(client, "api_url", None)
    return str(url).rstrip("/") if url else current_api_url()


@contextmanager
def shared_api_settings() -> Iterator[str | None]:
    """Pin ``PREFECT_API_URL`` to the flow's API while process workers are started and fed.

    Enter it *around* the ``ProcessPoolTaskRunner`` (start and every ``submit``). When a URL
    is already configured this changes nothing.

    Yields:
        The API URL workers will use (None outside a flow run with no API configured).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = flow_api_url()
    if not url or current_api_url() == url:
        yield url
        return
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


class ChunkFailed(FailedWithPayload):
    """Some objects of a chunk failed; ``report`` keeps what succeeded and why others failed.

    Raised so that the chunk's task run shows Failed in the UI while the flow goes on.
    """

    def __init__(self, report: ChunkReport) -> None:
        self.report = report
        super().__init__(objects_failed(report.result.failed))


def report_of(value: object, error: BaseException | None) -> ChunkReport | None:
    """The report of a ``square_chunk`` task, also when it raised :class:`ChunkFailed`."""
    if error is None:
        return value if isinstance(value, ChunkReport) else None
    return error.report if isinstance(error, ChunkFailed) else None


@task(name="square_chunk", cache_policy=NO_CACHE)
def square_chunk(
    jobs: list[tuple[str, str, str]],
    transform: str = "square",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ChunkReport:
    """Transform a chunk of ``(key, input path, output path)`` files; failures are per object.

    Args:
        jobs: Local files to read and write, with the S3 key used in stats and errors.
        transform: A registered transform name (see :mod:`transforms.registry`).
        max_line_bytes: Longest input line accepted; a longer one fails its object.

    Returns:
        The chunk's result and the API URL seen.

    Raises:
        ChunkFailed: If any object failed (carrying the whole report).
    """
    report = ChunkReport(transform_files(jobs, transform, max_line_bytes), current_api_url())
    if report.result.failed:
        raise ChunkFailed(report)
    return report


@task(name="start_worker", cache_policy=NO_CACHE)
def start_worker() -> int:
    """Return this process's PID. Submitted first, it makes a process pool spawn its workers
    (~2 s of interpreter start and imports) while the first chunks are still downloading."""
    return os.getpid()
