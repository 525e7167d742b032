"""The options of the ``prefect-s3`` transfer commands, and how they become flow arguments.

Each group is a dataclass that cyclopts flattens into ``--options``. A field whose name is a
parameter of the flow being run is passed to it as is, so a new flow parameter needs one new
field here and nothing else; a bounded one takes its help text and range from its declaration
in :mod:`prefect_s3_concurrency.parameters` (``cli_parameter``), which the flow uses too.
A field the flow does not have is refused when it is set (``--dry-run`` on a flow without
``dry_run``) and otherwise left out.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cyclopts import Group, Parameter

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.parameters import (
    DEFAULT_WORKERS,
    BatchMiB,
    BatchObjects,
    ChunksPerWorker,
    CpuWorkers,
    MaxAttempts,
    MaxLineBytes,
    MinChunkMiB,
    MinProcessMiB,
    RequestsInFlight,
    ScratchMiB,
    TaskRetries,
    Workers,
    cli_parameter,
)
from prefect_s3_concurrency.s3.engine_registry import ENGINE_MODULES, EngineName
from prefect_s3_concurrency.s3.object_headers import SseChoice, StorageClass

TRANSFER = Group("Transfer", sort_key=1)
CONNECTION = Group("S3 connection", sort_key=2)
SQUARE = Group("Squaring", sort_key=3)
UPLOAD = Group("Uploaded objects", sort_key=4)
OUTPUT = Group("Output", sort_key=5)


def _flag(help_text: str, group: Group) -> Parameter:
    """An on-only flag (no ``--no-...`` form)."""
    return Parameter(help=help_text, negative="", group=group, show_default=False)


@Parameter(name="*", group=TRANSFER)
@dataclass
class TransferOptions:
    """Options of every transfer command."""

    workers: Annotated[int, cli_parameter(Workers)] = DEFAULT_WORKERS
    include: Annotated[
        list[str] | None,
        Parameter(
            help="Only keys (relative paths) matching this glob; repeatable.",
            negative="",
            metavar="GLOB",
        ),
    ] = None
    exclude: Annotated[
        list[str] | None,
        Parameter(help="Leave out keys (relative paths) matching this glob; repeatable.",
                  negative="", metavar="GLOB"),
    ] = None  # fmt: skip
    dry_run: Annotated[
        bool, _flag("Show what would be transferred (and deleted); change nothing.", TRANSFER)
    ] = False
    task_retries: Annotated[int, cli_parameter(TaskRetries)] = 2
    batch_max_objects: Annotated[int, cli_parameter(BatchObjects)] = 100
    engine: Annotated[
        EngineName,
        Parameter(help="Transfer engine: auto (the first installed of "
                  f"{', '.join(ENGINE_MODULES)}) or one of them."),
    ] = "auto"  # fmt: skip
    requests_in_flight: Annotated[int | None, cli_parameter(RequestsInFlight)] = None
    request_budget: Annotated[
        str | None,
        Parameter(help="A Prefect global concurrency limit (prefect gcl create NAME --limit K) "
                  "bounding the S3 requests in flight of every run naming it.", metavar="NAME"),
    ] = None  # fmt: skip
    fail_if_empty: Annotated[
        bool, _flag("Fail when the source holds no matching object (a mistyped prefix).", TRANSFER)
    ] = False
    allow_rejected: Annotated[
        bool,
        _flag("Succeed (exit 0) although some keys or files were rejected as unsafe.", TRANSFER),
    ] = False
    dask_address: Annotated[
        str | None,
        Parameter(
            name="--dask", metavar="ADDRESS",
            help="Run the tasks on this existing Dask scheduler, e.g. tcp://10.0.0.5:8786.",
        ),
    ] = None  # fmt: skip


@Parameter(name="*", group=TRANSFER)
@dataclass
class CopyOptions:
    """Options of ``cp`` and ``sync``."""

    skip_existing: Annotated[
        bool,
        Parameter(help="Skip objects whose size and checksum already match at the destination."),
    ] = True
    batch_max_mib: Annotated[int, cli_parameter(BatchMiB)] = 256
    follow_symlinks: Annotated[
        bool, _flag("Upload the targets of symbolic links (skipped by default).", TRANSFER)
    ] = False
    allow_outside_symlinks: Annotated[
        bool, _flag("With --follow-symlinks, also follow links out of the source.", TRANSFER)
    ] = False


@Parameter(name="*", group=SQUARE)
@dataclass
class SquareOptions:
    """Options of ``square``."""

    transform: Annotated[
        str,
        Parameter(
            help="square, or a transform registered in PREFECT_S3_TRANSFORMS or the "
            "prefect_s3_concurrency.transforms entry points."
        ),
    ] = "square"
    cpu_workers: Annotated[int, cli_parameter(CpuWorkers)] = 2
    min_process_mib: Annotated[float, cli_parameter(MinProcessMiB)] = 128.0
    max_scratch_mib: Annotated[int, cli_parameter(ScratchMiB)] = 2048
    chunks_per_worker: Annotated[int, cli_parameter(ChunksPerWorker)] = 4
    min_chunk_mib: Annotated[float, cli_parameter(MinChunkMiB)] = 16.0
    scratch_dir: Annotated[
        str | None,
        Parameter(help="Directory for scratch files (default: the system temp directory)."),
    ] = None
    recompute: Annotated[
        bool, _flag("Square every object again, even when its output is up to date.", SQUARE)
    ] = False
    max_line_bytes: Annotated[int, cli_parameter(MaxLineBytes)] = 16 * 2**20


@Parameter(name="*", group=CONNECTION)
@dataclass
class ConnectionOptions:
    """How to reach S3; by default boto3's own chain (environment, ~/.aws, instance role)."""

    endpoint_url: Annotated[
        str | None,
        Parameter(help="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, rclone).",
                  metavar="URL"),
    ] = None  # fmt: skip
    credentials: Annotated[
        str | None,
        Parameter(help="Name of a saved prefect-aws block: NAME, or TYPE/NAME with TYPE one of "
                  "aws-credentials, minio-credentials, s3-bucket.", metavar="BLOCK"),
    ] = None  # fmt: skip
    region: Annotated[
        str | None, Parameter(help="AWS region, e.g. eu-west-1.", metavar="REGION")
    ] = None
    retry_mode: Annotated[
        Literal["standard", "adaptive"], Parameter(help="botocore retry mode.")
    ] = "standard"
    max_attempts: Annotated[int, cli_parameter(MaxAttempts)] = 5

    def connection(self) -> Any:
        """Return the flows' ``S3Connection`` for these options.

        Raises:
            ConfigurationError: If a value is invalid (one line, naming the option).
        """
        from pydantic import ValidationError

        from prefect_s3_concurrency.s3.connection import S3Connection

        fields = {
            "endpoint_url": self.endpoint_url, "credentials_block": self.credentials,
            "region": self.region, "retry_mode": self.retry_mode,
            "max_attempts": self.max_attempts,
        }  # fmt: skip
        try:
            return S3Connection(**{k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else ""
            option = "--credentials" if name == "credentials_block" else option_name(name)
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ConfigurationError(f"invalid value for {option}: {message}") from None


@Parameter(name="*", group=UPLOAD)
@dataclass
class UploadFlags:
    """Headers set on uploaded objects, as ``aws s3 cp`` sets them (uploads only)."""

    content_type: Annotated[
        str | None,
        Parameter(help="Content-Type of every uploaded object (default: guessed from each file "
                  "name with Python's built-in table, as aws-cli does).", metavar="TYPE"),
    ] = None  # fmt: skip
    guess_mime_type: Annotated[
        bool,
        Parameter(help="Guess each Content-Type from the file name; --no-guess-mime-type sends "
                  "none (S3 stores binary/octet-stream)."),
    ] = True  # fmt: skip
    sse: Annotated[
        SseChoice | None,
        Parameter(help="Server-side encryption: AES256 or aws:kms (default: the bucket's).",
                  metavar="AES256|aws:kms"),
    ] = None  # fmt: skip
    sse_kms_key_id: Annotated[
        str | None, Parameter(help="KMS key id or ARN, with --sse aws:kms.", metavar="KEY")
    ] = None
    storage_class: Annotated[
        StorageClass | None,
        Parameter(help="Storage class of the uploaded objects (default: STANDARD).",
                  metavar="CLASS"),
    ] = None  # fmt: skip
    cache_control: Annotated[
        str | None,
        Parameter(help="Cache-Control of every uploaded object, e.g. max-age=3600.",
                  metavar="VALUE"),
    ] = None  # fmt: skip

    def upload_kwargs(self, flow_obj: Any) -> dict[str, Any]:
        """``{"upload_options": ...}`` for a flow that uploads; nothing for one that does not.

        Raises:
            ConfigurationError: If a value is invalid, or set for a flow that only downloads.
        """
        from pydantic import ValidationError

        from prefect_s3_concurrency.s3.upload_options import UploadOptions

        fn = getattr(flow_obj, "fn", flow_obj)
        if "upload_options" not in inspect.signature(fn).parameters:
            flow_kwargs(flow_obj, self)  # refuses any option that was set
            return {}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        try:
            return {"upload_options": UploadOptions(**values)}
        except ValidationError as exc:
            error = exc.errors()[0]
            where = (
                f"invalid value for {option_name(str(error['loc'][0]))}: " if error["loc"] else ""
            )
            message = str(error["msg"]).removeprefix("Value error, ")
            message = message.replace("sse_kms_key_id", "--sse-kms-key-id")
            message = message.replace("sse='aws:kms'", "--sse aws:kms")
            raise ConfigurationError(where + message) from None


@Parameter(name="*", group=OUTPUT)
@dataclass
class OutputOptions:
    """What the command prints."""

    json: Annotated[
        bool, _flag("Print the run's summary as JSON on stdout, also when it failed.", OUTPUT)
    ] = False
    progress: Annotated[
        bool, Parameter(help="Show a progress bar (only when stdout and stderr are terminals).")
    ] = True
    verbose: Annotated[
        bool, _flag("Show Prefect's log lines (task runs, states) while the flow runs.", OUTPUT)
    ] = False
    heartbeats: Annotated[
        bool,
        _flag("Send flow-run heartbeats (off for command-line runs: they only serve crash "
              "detection of runs a worker tracks, and add up to 1 s per run).", OUTPUT),
    ] = False  # fmt: skip


def option_name(field_name: str) -> str:
    """``dry_run`` -> ``--dry-run``."""
    return "--" + field_name.replace("_", "-")


def flow_kwargs(flow_obj: Any, *groups: Any) -> dict[str, Any]:
    """Map option groups onto the keyword arguments of ``flow_obj``.

    Args:
        flow_obj: A Prefect flow (or a plain function).
        *groups: Option dataclass instances.

    Returns:
        Every field that names a parameter of the flow, with its value.

    Raises:
        ConfigurationError: If an option the flow does not take was set to a non-default value.
    """
    fn = getattr(flow_obj, "fn", flow_obj)
    accepted = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    for group in groups:
        for field in dataclasses.fields(group):
            value = getattr(group, field.name)
            if field.name in accepted:
                kwargs[field.name] = value
            elif value != field.default:
                name = getattr(flow_obj, "name", fn.__name__)
                raise ConfigurationError(f"{option_name(field.name)} is not supported by {name}")
    return kwargs
