"""Task runners as configuration: threads and processes on this machine, or an existing Dask
cluster for many machines.

A Dask scheduler address is a run parameter (``dask_address``), but connecting to a scheduler
means trusting it: the Dask client unpickles what the scheduler sends. So an address is only
used when it is also listed in the ``PREFECT_S3_DASK_ADDRESSES`` environment variable of the
process running the flow (comma-separated), which the operator sets on the worker or work
pool; a run form cannot add to it. The ``prefect-s3 --dask ADDRESS`` command line adds the
address it was given, since whoever runs it already runs code on this machine.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from prefect.tasks import Task
from prefect.utilities.annotations import quote
from pydantic import Field

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.runtime.redact import install_log_redaction

ALLOWED_ENV = "PREFECT_S3_DASK_ADDRESSES"
CONNECT_TIMEOUT = 5.0  # seconds to reach a Dask scheduler
DaskAddress = Annotated[
    str | None,
    Field(
        description="Dask scheduler to run tasks on, e.g. tcp://10.0.0.5:8786; it must be "
        f"listed in {ALLOWED_ENV} where the flow runs. Empty: this machine.",
        examples=["tcp://127.0.0.1:8786"],
    ),
]


def allowed_dask_addresses() -> set[str]:
    """The scheduler addresses this process may connect to (from ``PREFECT_S3_DASK_ADDRESSES``)."""
    return {a.strip() for a in os.environ.get(ALLOWED_ENV, "").split(",") if a.strip()}


def allow_dask_address(address: str) -> None:
    """Add ``address`` to this process's allowed schedulers (for the command line)."""
    os.environ[ALLOWED_ENV] = ",".join(sorted(allowed_dask_addresses() | {address}))


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds if nothing accepts connections at ``address``.

    Raises:
        ConfigurationError: Naming the address, if it is not ``tcp://host:port`` or the
            scheduler cannot be reached (Dask's client would wait 30 s, then fail vaguely).
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if parts.scheme != "tcp" or not host or not port:
        raise ConfigurationError(f"Dask scheduler {address!r} is not a tcp://host:port address")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        message = f"cannot reach the Dask scheduler at {address}: {reason}"
        raise ConfigurationError(message) from None


def dask_runner(address: str) -> TaskRunner[Any]:
    """A ``DaskTaskRunner`` connected to the scheduler at ``address``.

    Raises:
        ConfigurationError: If the address is not allowed here or cannot be reached, or
            prefect-dask is missing.
    """
    if address not in allowed_dask_addresses():
        raise ConfigurationError(
            f"Dask scheduler {address!r} is not allowed here: add it to {ALLOWED_ENV} in the "
            "environment of the worker that runs this flow"
        )
    check_scheduler(address)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigurationError(
            "dask_address needs prefect-dask: pip install 'prefect-s3-concurrency[dask]'"
        ) from None
    return DaskTaskRunner(address=address)


def io_runner(workers: int, dask_address: str | None = None) -> TaskRunner[Any]:
    """The runner for transfer batch tasks: ``workers`` threads, or the Dask cluster."""
    if dask_address:
        return dask_runner(dask_address)
    return ThreadPoolTaskRunner(max_workers=workers)


def cpu_runner(
    use_processes: bool, cpu_workers: int, dask_address: str | None = None
) -> TaskRunner[Any]:
    """The runner for squaring chunks: the Dask cluster, a process pool for real work, or one
    thread of the flow process for small workloads."""
    if dask_address:
        return dask_runner(dask_address)
    if use_processes:
        return fresh_process_pool(cpu_workers)
    return ThreadPoolTaskRunner(max_workers=1)


def prepare_worker() -> None:
    """Start a process-pool worker: redact its logs, then pay its one-time costs now.

    A worker's first task would otherwise import Prefect's task engine and load the plugin
    collections (``prefect_aws`` and its boto3...) while it squares: ~1-2 s of CPU billed to
    the first chunk. Done here, that cost is part of the worker's start, which the pipeline
    overlaps with its first downloads.
    """
    install_log_redaction()
    import prefect.task_engine  # noqa: F401 - every task runs through it
    from prefect.plugins import load_prefect_collections

    import prefect_s3_concurrency.tasks.cpu  # noqa: F401 - the module of the CPU tasks

    load_prefect_collections()


def fresh_process_pool(workers: int) -> TaskRunner[Any]:
    """A new, unstarted process pool (also to replace one that a dead worker broke); each
    worker process redacts its logs and imports what its tasks need from its start."""
    return ProcessPoolTaskRunner(max_workers=workers, initializer=prepare_worker)


def submit(runner: TaskRunner[Any], task_obj: Task[Any, Any], params: dict[str, Any]) -> Any:
    """Submit ``task_obj`` to ``runner``; returns its future.

    ``quote`` (which spares Prefect from walking a batch's items) is a named tuple, which Dask
    would take apart on its way to a worker, so quoted values travel unquoted to Dask.
    """
    if type(runner).__name__ == "DaskTaskRunner":
        params = {k: v.unquote() if isinstance(v, quote) else v for k, v in params.items()}
    return runner.submit(task_obj, params)
