"""The engine registry: which engines exist, how each is opened, and how ``auto`` chooses.

A new engine is one module that subclasses :class:`~s3.engines.base.Engine` and defines
``SPEC = EngineSpec(...)``, plus one line in :data:`ENGINE_MODULES`. The flows' and the
command line's ``engine`` choices, the defaults per batch and ``auto`` follow from it.

This module imports no S3 library: the command line reads the names at start-up.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from prefect_s3_concurrency.s3.connection import S3Connection
    from prefect_s3_concurrency.s3.engines.base import Engine

# name -> module defining SPEC, in the order ``auto`` prefers them (the first installed).
ENGINE_MODULES: dict[str, str] = {
    "obstore": "prefect_s3_concurrency.s3.engines.obstore_engine",
    "boto3": "prefect_s3_concurrency.s3.engines.boto3_engine",
}
ENGINE_ENV = "PREFECT_S3_ENGINE"  # what ``auto`` means when set to a registered name

if TYPE_CHECKING:
    EngineName = str
else:  # the flows' and the command line's choices: auto and every registered engine
    EngineName = Literal[("auto", *ENGINE_MODULES)]


@dataclass(frozen=True)
class EngineSpec:
    """What the registry knows of an engine.

    Attributes:
        name: Its registry name.
        requests_in_flight: Requests in flight per batch task by default (from the
            benchmark, benchmarks/README.md).
        workers_per_batch: Worker threads one batch task stands for: an async engine keeps
            many requests in flight on its own loop, so it needs few batch tasks (each costs
            Prefect API calls); a thread-bound one needs one batch per thread.
        reaches_moto_mock: It sends through botocore, so moto's in-process ``mock_aws``
            (which patches botocore only) sees its requests.
        open: ``(conn, pool_size, requests_in_flight) -> Engine`` for one batch.
    """

    name: str
    requests_in_flight: int
    workers_per_batch: int
    reaches_moto_mock: bool
    open: Callable[[S3Connection, int, int], Engine]


def engine_spec(name: str | None) -> EngineSpec:
    """The spec of ``name`` (``auto``/None resolved first, see :func:`resolve_engine`)."""
    real = resolve_engine(name)
    spec: EngineSpec = importlib.import_module(ENGINE_MODULES[real]).SPEC
    return spec


def _installed(name: str) -> bool:
    try:
        importlib.import_module(ENGINE_MODULES[name])
    except ImportError:
        return False
    return True


def resolve_engine(name: str | None) -> str:
    """Turn ``auto``/None into a registered engine name.

    ``auto`` is the first registered engine that reaches moto's ``mock_aws`` while it is
    active (anything else would go to the real AWS endpoint), else the engine
    ``PREFECT_S3_ENGINE`` names, else the first one installed.

    Raises:
        ValueError: An unknown name.
    """
    if name in ENGINE_MODULES:
        return name
    if name not in (None, "auto"):
        choices = ", ".join(ENGINE_MODULES)
        raise ValueError(f"unknown engine {name!r}: use auto, {choices}")
    from prefect_s3_concurrency.s3.connection import moto_mock_active

    if moto_mock_active():
        return next(n for n in ENGINE_MODULES if _installed(n) and engine_spec(n).reaches_moto_mock)
    env = os.environ.get(ENGINE_ENV, "").strip().lower()
    if env in ENGINE_MODULES:
        return env
    return next(n for n in ENGINE_MODULES if _installed(n))


def batches_for(name: str | None, workers: int) -> int:
    """Batch tasks to run at once (and to cut a transfer into, at least) for ``workers``."""
    return max(1, -(-workers // engine_spec(name).workers_per_batch))


def in_flight_for(name: str | None, requests_in_flight: int | None) -> int:
    """Requests in flight per batch for ``name``: the given number, else the default."""
    return requests_in_flight or engine_spec(name).requests_in_flight


def pool_connections(name: str, workers: int, threads: int) -> int:
    """Connections for the process's botocore client shared by ``workers``' batch tasks.

    Every batch task running at once (:func:`batches_for`) has ``threads`` botocore calls
    (the ranged GETs or part uploads of its large objects) on its own threads; a pool
    smaller than that discards a connection after each surplus request (urllib3's
    "Connection pool is full" warning) and opens a new one for the next.
    """
    return max(workers, batches_for(name, workers) * threads)


def botocore_client(conn: S3Connection, name: str, pool_size: int, threads: int) -> Any:
    """The process's botocore client for ``conn``, its pool sized for every batch of ``name``."""
    from prefect_s3_concurrency.s3.connection import get_s3_client

    return get_s3_client(conn, pool_connections(name, pool_size, threads))
