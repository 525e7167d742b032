"""Shared flow pieces: parameter types, the run summary and its table artifact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from pydantic import AfterValidator, BaseModel, Field

from prefect_s3_concurrency.tasks.errors import ConfigurationError, describe_error, printable
from prefect_s3_concurrency.tasks.paths import parse_s3_url
from prefect_s3_concurrency.tasks.s3 import BatchFailed
from prefect_s3_concurrency.tasks.transfer import BatchResult


def _valid_s3_url(value: str) -> str:
    parse_s3_url(value)
    return value


S3Uri = Annotated[
    str,
    Field(
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", examples=["s3://bucket/prefix"]
    ),
    AfterValidator(_valid_s3_url),
]
Workers = Annotated[int, Field(ge=1, le=256, description="Concurrent threads for S3 transfers.")]
Globs = Annotated[list[str] | None, Field(description="Glob patterns on the relative key.")]
BatchObjects = Annotated[int, Field(ge=1, le=100_000, description="Most objects per batch task.")]
BatchMiB = Annotated[int, Field(ge=1, description="Most MiB per batch task.")]
TaskRetries = Annotated[int, Field(ge=0, le=10, description="Prefect retries per batch task.")]
MAX_LISTED_KEYS = 1000  # per list in the artifact; logs always carry every failed key


class TransferSummary(BaseModel):
    """What a transfer flow did."""

    direction: str
    source: str
    destination: str
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: int = 0
    dry_run: bool = False
    planned: list[str] = Field(default_factory=list)
    rejected: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list)
    stale_removed: int = 0

    @property
    def files_per_second(self) -> float:
        """Objects transferred per second of wall time."""
        return self.objects / self.seconds if self.seconds else 0.0

    @property
    def mib_per_second(self) -> float:
        """MiB transferred per second of wall time."""
        return self.bytes / 2**20 / self.seconds if self.seconds else 0.0

    def rows(self) -> list[dict[str, Any]]:
        """Return the summary as table rows (``item``, ``value``)."""
        rows: list[dict[str, Any]] = [
            {"item": "direction", "value": self.direction},
            {"item": "source", "value": self.source},
            {"item": "destination", "value": self.destination},
            {"item": "dry run", "value": self.dry_run},
            {
                "item": "objects transferred" if not self.dry_run else "objects planned",
                "value": self.objects,
            },
            {"item": "bytes", "value": self.bytes},
            {"item": "seconds", "value": round(self.seconds, 3)},
            {"item": "files/s", "value": round(self.files_per_second, 1)},
            {"item": "MiB/s", "value": round(self.mib_per_second, 2)},
            {"item": "skipped (already identical)", "value": self.skipped},
            {
                "item": "deleted (extra at destination)"
                if not self.dry_run
                else "would delete (extra at destination)",
                "value": len(self.deleted),
            },
            {"item": "stale temp files removed", "value": self.stale_removed},
            {"item": "rejected keys", "value": len(self.rejected)},
            {"item": "failed keys", "value": len(self.failed)},
        ]
        rows += keyed_rows("failed", self.failed)
        rows += keyed_rows("rejected", self.rejected)
        return rows


def keyed_rows(label: str, reasons: dict[str, str]) -> list[dict[str, Any]]:
    """Rows naming each key of ``reasons`` (capped at MAX_LISTED_KEYS)."""
    rows = [
        {"item": f"{label}: {printable(k)}", "value": printable(v)}
        for k, v in list(reasons.items())[:MAX_LISTED_KEYS]
    ]
    if len(reasons) > MAX_LISTED_KEYS:
        rows.append({"item": f"{label}: ...", "value": f"{len(reasons) - MAX_LISTED_KEYS} more"})
    return rows


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Publish rows as a Prefect table artifact (a no-op outside a flow run)."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is not None:
        create_table_artifact(table=rows, key=key, description=description)


def task_outcome(future: PrefectFuture[Any]) -> tuple[Any, BaseException | None]:
    """Wait for a task: ``(result, None)`` if it completed, else ``(None, its exception)``."""
    future.wait()
    state = future.state
    if state.is_completed():
        return future.result(), None
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, BaseException):
        return None, exc
    return None, RuntimeError(f"task ended {state.name}: {state.message}")


def batch_of(value: Any, error: BaseException | None) -> BatchResult | None:
    """The batch result of a transfer task, also when it raised BatchFailed."""
    if error is None:
        return value
    return error.result if isinstance(error, BatchFailed) else None


def gather_batches(futures: Iterable[PrefectFuture[Any]], batches: list[list[str]]) -> BatchResult:
    """Wait for batch futures and merge their results, failures included.

    Args:
        futures: One future per batch, in the same order as ``batches``.
        batches: The keys each batch carried, to name them if a batch crashed outright.

    Returns:
        The merged result. No exception escapes: failures become entries of ``failed``.
    """
    total = BatchResult()
    for future, keys in zip(futures, batches, strict=True):
        value, error = task_outcome(future)
        batch = batch_of(value, error)
        if batch is not None:
            total.merge(batch)
        else:
            total.failed.update({k: describe_error(error) for k in keys})
    return total


def log_key_reasons(rejected: dict[str, str], failed: dict[str, str]) -> None:
    """Log every rejected key (warning) and every failed key (error) with its reason."""
    logger = get_run_logger()
    for key, reason in rejected.items():
        logger.warning("rejected key '%s': %s", printable(key), printable(reason))
    for key, reason in failed.items():
        logger.error("failed key '%s': %s", printable(key), printable(reason))


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and prove it is writable.

    Raises:
        ConfigurationError: If it cannot be created or written to.
    """
    target = Path(path).expanduser().resolve()
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"destination directory {str(target)!r} is not writable: {exc.strerror or exc}"
        ) from None
    return target
