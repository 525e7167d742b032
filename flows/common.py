"""Shared flow pieces: parameter types, the run summary and its table artifact."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, cast

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.tasks import Task, exponential_backoff
from prefect_aws import S3Bucket
from pydantic import (
    BaseModel,
    Field,
    PlainValidator,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    computed_field,
)

from prefect_s3_concurrency.errors import ConfigurationError, printable
from prefect_s3_concurrency.local.paths import BUCKET_PATTERN, S3Url, parse_s3_url
from prefect_s3_concurrency.parameters import (  # noqa: F401 - the flows' parameter types
    DEFAULT_WORKERS,
    BatchMiB,
    BatchObjects,
    TaskRetries,
    Workers,
)
from prefect_s3_concurrency.s3.connection import S3Connection, bucket_location
from prefect_s3_concurrency.s3.transfer import BatchResult
from prefect_s3_concurrency.tasks.s3 import BatchFailed

T = TypeVar("T")


def as_s3_url(value: Any) -> S3Url:
    """``value`` as an :class:`S3Url`: parsed from text; an S3Url is taken as it is.

    The flows' one parse: a run's parameters stay the text the user typed (the UI shows and
    re-runs them); from validation on, the flow and everything below it get the parsed URL.

    Raises:
        ConfigurationError: On a bad URL (a ``ValueError``, so pydantic reports it).
    """
    if isinstance(value, S3Url):  # valid by construction
        return value
    if isinstance(value, dict) and set(value) <= {"bucket", "prefix"}:  # a serialised S3Url
        return S3Url(**value)
    if not isinstance(value, str):
        raise ValueError(f"not an s3:// URL: {printable(value)}")
    return parse_s3_url(value)


# Validated by as_s3_url into an S3Url (one clear message); the pattern lets the Prefect server
# refuse a bad URL before a run is created, and the run form shows a text field.
S3Uri = Annotated[
    S3Url | str,  # text for callers; an S3Url once validated
    PlainValidator(as_s3_url),
    WithJsonSchema(
        {"type": "string", "pattern": f"^s3://{BUCKET_PATTERN}(/.*)?$",
         "examples": ["s3://bucket/prefix"]}
    ),
]  # fmt: skip


def _one_location_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A bad URL gets the URL's own message, not one error per member of the union."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str):
            as_s3_url(value)  # raises the one clear message
        raise


# An S3 location: an s3:// URL, or an S3Bucket block (its bucket and folder). A plain union, so
# the run form offers a choice between a text field and Prefect's block picker.
S3Location = Annotated[
    Union[S3Uri, S3Bucket],  # noqa: UP007
    Field(union_mode="left_to_right"),
    WrapValidator(_one_location_error),
]
LocalDir = Annotated[str, Field(description="A local directory.")]  # "" refused by the flows
Globs = Annotated[list[str] | None, Field(description="Glob patterns on the relative key.")]
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
    verified_by_size_only: list[str] = Field(
        default_factory=list,
        description="Transferred objects whose content S3 gave no usable checksum for "
        "(e.g. SSE-KMS or SSE-C without a stored CRC, multipart ETags of unknown part "
        "size): only their size was checked.",
    )
    dry_run: bool = False
    planned: list[str] = Field(default_factory=list)
    rejected: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list)
    stale_removed: int = 0
    throttled: int = Field(
        default=0,
        description="SlowDown replies S3 gave (each lowered the batch's pace, see "
        "docs/sharing-s3.md).",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def files_per_second(self) -> float:
        """Objects transferred per second of wall time (also in the JSON summary)."""
        return round(self.objects / self.seconds, 1) if self.seconds else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mib_per_second(self) -> float:
        """MiB transferred per second of wall time (also in the JSON summary)."""
        return round(self.bytes / 2**20 / self.seconds, 2) if self.seconds else 0.0

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
            {"item": "verified by size only", "value": len(self.verified_by_size_only)},
            {
                "item": "deleted (extra at destination)"
                if not self.dry_run
                else "would delete (extra at destination)",
                "value": len(self.deleted),
            },
            {"item": "stale temp files removed", "value": self.stale_removed},
            {"item": "rejected keys", "value": len(self.rejected)},
            {"item": "failed keys", "value": len(self.failed)},
            {"item": "SlowDown replies (backed off)", "value": self.throttled},
        ]
        rows += keyed_rows("failed", self.failed)
        rows += keyed_rows("rejected", self.rejected)
        rows += keyed_rows(
            "verified by size only",
            dict.fromkeys(self.verified_by_size_only, "no checksum S3 guarantees"),
        )
        if self.dry_run:
            rows += keyed_rows("would transfer", dict.fromkeys(self.planned, "planned"))
        deleted = "would delete" if self.dry_run else "deleted"
        rows += keyed_rows(deleted, dict.fromkeys(self.deleted, deleted))
        return rows


class EmptySourceError(ConfigurationError):
    """The source holds nothing to transfer and the run was asked to fail then."""


def resolve_location(
    location: S3Url | str | S3Bucket, conn: S3Connection
) -> tuple[S3Url, S3Connection]:
    """Turn a location parameter into its parsed URL and connection.

    Args:
        location: An :class:`S3Url` (as the flows' validation makes it), ``s3://`` text, or
            an S3Bucket block whose bucket, folder and credentials are used.
        conn: Connection settings; a block's credentials are added to them.

    Raises:
        ConfigurationError: On a bad URL, or credentials given twice.
    """
    if isinstance(location, S3Bucket):
        bucket, folder, creds = bucket_location(location)
        if conn.credentials is not None and conn.credentials != creds:
            raise ConfigurationError(
                f"the S3Bucket block for '{bucket}' has its own credentials: "
                "do not pass other credentials with it"
            )
        conn = conn if conn.credentials is not None else conn.with_credentials(creds)
        return parse_s3_url(f"s3://{bucket}/{folder}"), conn
    return as_s3_url(location), conn


def _shown(value: Any) -> str:
    """A run-name part as the user would read it (an S3Bucket block as its s3:// URL)."""
    if isinstance(value, S3Bucket):
        bucket, folder, _ = bucket_location(value)
        return f"s3://{bucket}/{folder}"
    return printable(value) if value is not None else "?"


def run_name(verb: str, source: str, dest: str) -> Callable[[], str]:
    """A ``flow_run_name`` saying what ran, e.g. ``download s3://b/raw -> data/raw``.

    Args:
        verb: First word of the name.
        source: The flow's parameter naming where it reads.
        dest: The flow's parameter naming where it writes.
    """

    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        return f"{verb} {_shown(params.get(source))} -> {_shown(params.get(dest))}"

    return name


def headline(objects: int, nbytes: int, seconds: float, noun: str = "objects") -> str:
    """The numbers a run's final state carries, e.g. ``20 objects, 1.2 MiB, 35 files/s``."""
    rate = objects / seconds if seconds else 0.0
    return f"{objects} {noun}, {nbytes / 2**20:.1f} MiB, {rate:.0f} files/s"


def completed(summary: T, message: str) -> T:
    """Return ``summary`` as the flow's result in a Completed state carrying ``message``
    (shown in the UI beside the run); calling the flow still returns ``summary``."""
    from prefect.states import Completed

    return cast(T, Completed(message=message, data=summary))


def check_not_empty(count: int, where: str, fail_if_empty: bool, hint: str = "") -> None:
    """Warn about an empty source, or fail the run with :class:`EmptySourceError`.

    Args:
        count: Objects (or files) found.
        where: The source, for the message.
        fail_if_empty: Raise instead of warning.
        hint: A further sentence, e.g. that the location names an object, not a prefix.
    """
    if count:
        return
    text = (
        f"empty source: no objects to transfer from {printable(where)} (check the location "
        "and the include/exclude globs)" + (f". {hint}" if hint else "")
    )
    if fail_if_empty:
        raise EmptySourceError(f"{text}; failing because fail_if_empty is set")
    get_run_logger().warning("%s; completing with 0 objects", text)


def retrying(task_obj: Task[Any, Any], task_retries: int) -> Task[Any, Any]:
    """Return ``task_obj`` with ``task_retries`` retries and exponential backoff."""
    delays = exponential_backoff(backoff_factor=1)(task_retries) if task_retries else 0
    return task_obj.with_options(retries=task_retries, retry_delay_seconds=delays)


def log_dry_run(planned: Iterable[str], deleted: Iterable[str], verb: str) -> None:
    """Name every key a dry run would transfer or delete, in the run's log."""
    logger = get_run_logger()
    for key in planned:
        logger.info("dry run: would %s %r", verb, key)
    for key in deleted:
        logger.info("dry run: would delete %r", key)


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
    if target.exists() and not target.is_dir():
        raise ConfigurationError(f"destination {str(target)!r} is a file, not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ConfigurationError(
            f"destination directory {str(target)!r} is not writable: {exc.strerror or exc}"
        ) from None
    return target
