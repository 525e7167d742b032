"""Transfer engines: which library moves the bytes. See :mod:`s3.engines.base`.

* ``obstore``: Rust ``object_store`` (async, releases the GIL); many requests in flight per
  batch task on one event loop. The default.
* ``boto3``: botocore on a few threads per batch (GIL-bound, ~1.6-2.3 ms CPU per object).
* ``auto``: ``obstore`` unless ``PREFECT_S3_ENGINE`` names another, or moto's in-process
  ``mock_aws`` is active (it patches botocore only, so only the boto3 engine would reach it;
  anything else would go to the real AWS endpoint).

boto3's own CRT transfer client (``preferred_transfer_client="crt"``) is never used: it ignores
``endpoint_url`` (boto3 #4839) and would send a custom endpoint's traffic to AWS.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import Field

from prefect_s3_concurrency.parameters import RequestsInFlight
from prefect_s3_concurrency.s3.connection import (
    S3Connection,
    get_s3_client,
    get_session,
    moto_mock_active,
)
from prefect_s3_concurrency.s3.engines.base import Engine, ObjectInfo, RangeNotSupported
from prefect_s3_concurrency.s3.engines.boto3_engine import Boto3Engine
from prefect_s3_concurrency.s3.engines.objects import PART_CONCURRENCY

EngineName = Literal["auto", "obstore", "boto3"]
EngineChoice = Annotated[
    EngineName,
    Field(description="Transfer engine: auto (= obstore), obstore (Rust, async) or boto3."),
]
ENGINE_ENV = "PREFECT_S3_ENGINE"
# Requests in flight per batch task, from the benchmark (benchmarks/README.md).
DEFAULT_IN_FLIGHT = {"obstore": 16, "boto3": 1}
# Worker threads per batch task: an obstore batch keeps many requests in flight on its own
# event loop, so it needs few batch tasks (each costs Prefect API calls); boto3 needs one
# batch per thread.
WORKERS_PER_BATCH = {"obstore": 4, "boto3": 1}
__all__ = [
    "Boto3Engine", "Engine", "EngineChoice", "EngineName", "ObjectInfo", "RangeNotSupported",
    "RequestsInFlight", "batches_for", "in_flight_for", "open_engine", "pool_connections",
    "resolve_engine",
]  # fmt: skip


def resolve_engine(name: str | None) -> Literal["obstore", "boto3"]:
    """Turn ``auto``/None into a concrete engine name (see the module docstring)."""
    if name in ("obstore", "boto3"):
        return name  # type: ignore[return-value]
    if name not in (None, "auto"):
        raise ValueError(f"unknown engine {name!r}: use auto, obstore or boto3")
    if moto_mock_active():
        return "boto3"
    env = os.environ.get(ENGINE_ENV, "").strip().lower()
    if env in ("obstore", "boto3"):
        return env  # type: ignore[return-value]
    try:
        import obstore  # noqa: F401
    except ImportError:  # pragma: no cover - obstore is a dependency
        return "boto3"
    return "obstore"


def batches_for(name: str | None, workers: int) -> int:
    """Batch tasks to run at once (and to cut a transfer into, at least) for ``workers``."""
    return max(1, -(-workers // WORKERS_PER_BATCH[resolve_engine(name)]))


def in_flight_for(name: str | None, requests_in_flight: int | None) -> int:
    """Requests in flight per batch for ``name``: the given number, else the default."""
    return requests_in_flight or DEFAULT_IN_FLIGHT[resolve_engine(name)]


def open_engine(
    conn: S3Connection | None,
    name: str | None = "auto",
    pool_size: int = 10,
    requests_in_flight: int | None = None,
) -> Engine:
    """Build an engine for one batch (its clients and stores are cached per process).

    Args:
        conn: Connection settings; None means boto3's default chain.
        name: ``auto``, ``obstore`` or ``boto3``.
        pool_size: Threads sharing the botocore client (its connection pool size).
        requests_in_flight: Requests in flight per batch; None for the engine's default.

    Returns:
        An engine; close it with ``await engine.aclose()``.
    """
    conn = conn or S3Connection()
    real = resolve_engine(name)
    in_flight = in_flight_for(real, requests_in_flight)
    threads = max(in_flight, PART_CONCURRENCY) if real == "boto3" else PART_CONCURRENCY
    client = get_s3_client(conn, pool_connections(real, pool_size, threads))
    credentials = get_session(conn).get_credentials()  # signs the fast listing
    if real == "boto3":
        return Boto3Engine(client, threads, credentials)
    from prefect_s3_concurrency.s3.engines.obstore_engine import ObstoreEngine

    return ObstoreEngine(conn, client, Boto3Engine(client, threads, credentials))


def pool_connections(name: str, workers: int, threads: int) -> int:
    """Connections for the process's botocore client shared by ``workers``' batch tasks.

    Every batch task running at once (:func:`batches_for`) has ``threads`` botocore calls
    (the ranged GETs or part uploads of its large objects) on its own threads; a pool
    smaller than that discards a connection after each surplus request (urllib3's
    "Connection pool is full" warning) and opens a new one for the next.
    """
    return max(workers, batches_for(name, workers) * threads)
