"""Transfer engines: which library moves the bytes. See :mod:`s3.engines.base`.

* ``obstore``: Rust ``object_store`` (async, releases the GIL); many requests in flight per
  batch task on one event loop. The default.
* ``boto3``: botocore on a few threads per batch (GIL-bound, ~1.6-2.3 ms CPU per object).
* ``auto``: ``obstore`` unless ``PREFECT_S3_ENGINE`` names another, or moto's in-process
  ``mock_aws`` is active (it patches botocore only, so only the boto3 engine would reach it;
  anything else would go to the real AWS endpoint).

Which engines exist, and how each is opened, is :mod:`s3.engine_registry`: a new engine is
one module defining ``SPEC`` plus one line there.

boto3's own CRT transfer client (``preferred_transfer_client="crt"``) is never used: it ignores
``endpoint_url`` (boto3 #4839) and would send a custom endpoint's traffic to AWS.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from prefect_s3_concurrency.parameters import RequestsInFlight
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engine_registry import (
    ENGINE_ENV,
    ENGINE_MODULES,
    EngineName,
    EngineSpec,
    batches_for,
    engine_spec,
    in_flight_for,
    pool_connections,
    resolve_engine,
)
from prefect_s3_concurrency.s3.engines.base import Engine, ObjectInfo, RangeNotSupported
from prefect_s3_concurrency.s3.engines.boto3_engine import Boto3Engine

EngineChoice = Annotated[
    EngineName,
    Field(description=f"Transfer engine: auto (the first installed of {', '.join(ENGINE_MODULES)}) "
          "or one of them."),
]  # fmt: skip
__all__ = [
    "ENGINE_ENV", "ENGINE_MODULES", "Boto3Engine", "Engine", "EngineChoice", "EngineName",
    "EngineSpec", "ObjectInfo", "RangeNotSupported", "RequestsInFlight", "batches_for",
    "engine_spec", "in_flight_for", "open_engine", "pool_connections", "resolve_engine",
]  # fmt: skip


def open_engine(
    conn: S3Connection | None,
    name: str | None = "auto",
    pool_size: int = 10,
    requests_in_flight: int | None = None,
) -> Engine:
    """Build an engine for one batch (its clients and stores are cached per process).

    Args:
        conn: Connection settings; None means boto3's default chain.
        name: ``auto`` or a registered engine (:data:`ENGINE_MODULES`).
        pool_size: Threads sharing the botocore client (its connection pool size).
        requests_in_flight: Requests in flight per batch; None for the engine's default.

    Returns:
        An engine; close it with ``await engine.aclose()``.
    """
    spec = engine_spec(name)
    in_flight = in_flight_for(spec.name, requests_in_flight)
    return spec.open(conn or S3Connection(), pool_size, in_flight)
