"""The ``prefect-s3`` command: concurrent S3 transfers and the squaring pipeline, as Prefect flows.

Subcommands: ``cp``, ``sync``, ``square``, ``serve``, ``local-s3`` and ``bench``. Options may come
anywhere after the subcommand; ``--json``, ``--verbose`` and ``--heartbeats`` may also come
before it. Exit codes: 0 done, 1 some objects failed or were rejected, 2 usage or configuration
error, 130 Ctrl-C, 143 SIGTERM (see :mod:`prefect_s3_concurrency.cli.run`).
"""

from __future__ import annotations

import dataclasses
import glob
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, CycloptsError, Parameter

from prefect_s3_concurrency import __version__
from prefect_s3_concurrency.cli.options import (
    ConnectionOptions,
    CopyOptions,
    OutputOptions,
    SquareOptions,
    TransferOptions,
    UploadFlags,
    flow_kwargs,
)
from prefect_s3_concurrency.cli.output import print_error
from prefect_s3_concurrency.cli.run import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    FlowCall,
    report_failure,
    run_flow,
)
from prefect_s3_concurrency.cli.tools import register
from prefect_s3_concurrency.errors import ConfigurationError, describe_error
from prefect_s3_concurrency.runtime.redact import install_log_redaction

if TYPE_CHECKING:
    from prefect_s3_concurrency.local.paths import S3Url

GLOBAL_FLAGS = ("--json", "--verbose", "--heartbeats")  # also accepted before the subcommand

app = App(
    name="prefect-s3",
    help="Concurrent S3 transfers and an S3 squaring pipeline, run as Prefect flows.\n\n"
    "Exit codes: 0 everything was done; 1 some objects failed or were rejected; "
    "2 usage or configuration error (bad URL or value, missing block or bucket, "
    "unreachable endpoint, access denied); 130 Ctrl-C; 143 SIGTERM.",
    help_format="markdown",
    version=__version__,
)
register(app)  # serve, local-s3, bench

Src = Annotated[str, Parameter(help="Where to copy from: s3://bucket/prefix or a local directory.")]
Dst = Annotated[str, Parameter(help="Where to copy to: a local directory or s3://bucket/prefix.")]


def _is_s3(location: str) -> bool:
    """True for anything written as an S3 URL, also a mistyped one (``S3:/b``)."""
    return location.lower().startswith("s3:")


def _direction(src: str, dst: str) -> tuple[str, S3Url]:
    """``download`` or ``upload``, from the argument order (like aws s3 cp and s5cmd), and
    the S3 side parsed (the command line's one parse of it).

    Raises:
        ConfigurationError: If both or neither are S3 URLs, or a URL is invalid.
    """
    from prefect_s3_concurrency.local.paths import parse_s3_url

    if _is_s3(src) and _is_s3(dst):
        raise ConfigurationError(
            f"both {src!r} and {dst!r} are S3 URLs: one of SRC and DST must be a local directory"
        )
    if not _is_s3(src) and not _is_s3(dst):
        raise ConfigurationError(
            f"neither {src!r} nor {dst!r} is an s3:// URL: one of SRC and DST must be "
            "s3://bucket/prefix"
        )
    url = parse_s3_url(src if _is_s3(src) else dst)
    return ("download" if _is_s3(src) else "upload"), url


def _check_local(direction: str, src: str, dst: str, single_file_ok: bool) -> bool:
    """Check the local side before anything starts; return True for one file to upload.

    Raises:
        ConfigurationError: A missing source directory, a file where a directory must be.
    """
    from prefect_s3_concurrency.errors import printable

    local = Path(src if direction == "upload" else dst).expanduser()
    shown = printable(local)
    if direction == "download":
        if local.exists() and not local.is_dir():
            raise ConfigurationError(f"DST '{shown}' is a file, not a directory")
        return False
    if not local.exists():
        raise ConfigurationError(f"SRC '{shown}' does not exist")
    if local.is_dir():
        return False
    if not single_file_ok:
        raise ConfigurationError(
            f"SRC '{shown}' is a file, not a directory: sync copies directories (use cp for "
            "one file)"
        )
    return True


def _one_file_upload(src: str, dst: str, transfer: TransferOptions) -> tuple[str, TransferOptions]:
    """``cp FILE s3://b/x/``: upload FILE's directory with --include FILE's name.

    Raises:
        ConfigurationError: If DST names another object (give a folder, ending in ``/``).
    """
    path = Path(src).expanduser()
    key = dst.split("://", 1)[1].partition("/")[2]
    if key and not key.endswith("/"):
        if key.rpartition("/")[2] != path.name:
            raise ConfigurationError(
                f"DST '{dst}' names another object than '{path.name}': give the folder to "
                "upload into, ending in '/'"
            )
        dst = dst[: -len(path.name)]  # s3://b/x/f.txt for f.txt: its folder
    if transfer.include or transfer.exclude:
        raise ConfigurationError("--include and --exclude apply to directories, not to one file")
    return str(path.parent), dataclasses.replace(transfer, include=[glob.escape(path.name)])


def _probe(connection: Any, url: S3Url) -> Callable[[], bool | None]:
    """One request to S3 (bucket, credentials, endpoint), made while the Prefect server
    starts; it returns whether the location holds keys (None: not probed)."""

    def check() -> bool | None:
        if connection.credentials_block:  # loading a block needs Prefect's API
            return None
        from prefect_s3_concurrency.s3.probe import probe

        return probe(connection, url)

    return check


def _single_object(connection: Any, url: S3Url) -> tuple[str, str] | None:
    """``(parent URL, name)`` when ``url`` names one object (no key lies under it)."""
    from prefect_s3_concurrency.s3.probe import object_exists

    if not url.prefix or url.prefix.endswith("/") or not object_exists(connection, url):
        return None
    parent, _, name = url.prefix.rpartition("/")
    return f"s3://{url.bucket}/{parent}", name


def _copy(
    src: str, dst: str, delete_extra: bool, transfer: TransferOptions, copy: CopyOptions,
    conn: ConnectionOptions, output: OutputOptions, upload: UploadFlags,
) -> int:  # fmt: skip
    """Run download-prefix or upload-directory for ``cp`` and ``sync``.

    Like aws-cli and s5cmd, ``cp s3://b/raw DIR`` copies the keys under ``raw/`` when there
    are any, else the object ``raw`` itself; ``cp FILE s3://b/x/`` uploads one file.
    """
    try:
        direction, url = _direction(src, dst)
        if _check_local(direction, src, dst, single_file_ok=not delete_extra):
            src, transfer = _one_file_upload(src, dst, transfer)
        connection = conn.connection()
    except ConfigurationError as exc:
        return report_failure(exc, output)
    probe = _probe(connection, url)
    chosen = {"source": src, "transfer": transfer}

    def check() -> None:
        if probe() is False and direction == "download" and not connection.credentials_block:
            single = _single_object(connection, url)
            if single is not None:  # s3://b/raw is one object and no key is under raw/
                chosen["source"] = single[0]
                chosen["transfer"] = dataclasses.replace(transfer, include=[glob.escape(single[1])])

    def load() -> Any:
        from prefect_s3_concurrency.flows import transfer as flows

        return flows.download_prefix if direction == "download" else flows.upload_directory

    def arguments(flow_obj: Any) -> dict[str, Any]:
        places = {"source": chosen["source"], "dest_dir": dst} if direction == "download" else {
            "source_dir": src, "dest": dst}  # fmt: skip
        return {**places, **flow_kwargs(flow_obj, chosen["transfer"], copy),
                **upload.upload_kwargs(flow_obj), "connection": connection,
                "delete_extra": delete_extra}  # fmt: skip

    return run_flow(FlowCall(load, arguments, output, f"{direction} {src} -> {dst}", check))


@app.command
def cp(
    src: Src,
    dst: Dst,
    /,
    *,
    transfer: TransferOptions = TransferOptions(),  # noqa: B008
    copy: CopyOptions = CopyOptions(),  # noqa: B008
    conn: ConnectionOptions = ConnectionOptions(),  # noqa: B008
    upload: UploadFlags = UploadFlags(),  # noqa: B008
    output: OutputOptions = OutputOptions(),  # noqa: B008
) -> int:
    """Copy an S3 prefix to a local directory, or a local directory to an S3 prefix.

    The direction follows the argument order: prefect-s3 cp s3://bucket/raw ./raw downloads,
    prefect-s3 cp ./raw s3://bucket/raw uploads. Like aws-cli: s3://bucket/raw is the keys
    under raw/, or the object raw when there are none; cp ./f.txt s3://bucket/x/ uploads
    one file. Transfers are verified and atomic; objects
    already identical at the destination are skipped, so a re-run resumes.
    """
    return _copy(src, dst, False, transfer, copy, conn, output, upload)


@app.command
def sync(
    src: Src,
    dst: Dst,
    /,
    *,
    transfer: TransferOptions = TransferOptions(),  # noqa: B008
    copy: CopyOptions = CopyOptions(),  # noqa: B008
    conn: ConnectionOptions = ConnectionOptions(),  # noqa: B008
    upload: UploadFlags = UploadFlags(),  # noqa: B008
    output: OutputOptions = OutputOptions(),  # noqa: B008
) -> int:
    """Like cp, then delete what the destination has and the source lacks.

    Only files or objects passing --include/--exclude are deleted, and nothing is deleted
    after a failed transfer or from an empty source. Try --dry-run first.
    """
    return _copy(src, dst, True, transfer, copy, conn, output, upload)


@app.command
def square(
    src: Annotated[str, Parameter(help="Input objects: s3://bucket/prefix.")],
    dst: Annotated[str, Parameter(help="Where the squares go: s3://bucket/prefix.")],
    /,
    *,
    transfer: TransferOptions = TransferOptions(),  # noqa: B008
    squaring: SquareOptions = SquareOptions(),  # noqa: B008
    conn: ConnectionOptions = ConnectionOptions(),  # noqa: B008
    upload: UploadFlags = UploadFlags(),  # noqa: B008
    output: OutputOptions = OutputOptions(),  # noqa: B008
) -> int:
    """Square every integer of every object under SRC into DST, keeping relative keys.

    Objects hold newline-delimited integers. Downloads and uploads run on threads, squaring on
    worker processes. A bad line fails only its object. Outputs made from the same input and
    transform by an earlier run are kept, so a re-run resumes.
    """
    from prefect_s3_concurrency.local.paths import parse_s3_url

    try:
        source, _ = parse_s3_url(src), parse_s3_url(dst)
        connection = conn.connection()
    except ConfigurationError as exc:
        return report_failure(exc, output)

    def load() -> Any:
        from prefect_s3_concurrency.flows.pipeline import square_objects

        return square_objects

    def arguments(flow_obj: Any) -> dict[str, Any]:
        return {"source": src, "dest": dst, **flow_kwargs(flow_obj, transfer, squaring),
                **upload.upload_kwargs(flow_obj), "connection": connection}  # fmt: skip

    return run_flow(
        FlowCall(load, arguments, output, f"square {src} -> {dst}", _probe(connection, source))
    )


def _global_flags_after_command(tokens: list[str]) -> list[str]:
    """Move ``--json`` etc. given before the subcommand to just after it."""
    lead = []
    while tokens and tokens[0] in GLOBAL_FLAGS:
        lead.append(tokens.pop(0))
    return tokens[:1] + lead + tokens[1:] if lead and tokens else lead + tokens


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prefect-s3`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    install_log_redaction()  # before any command logs a request
    tokens = _global_flags_after_command(list(sys.argv[1:] if argv is None else argv))
    try:
        command, bound, _ = app.parse_args(tokens, exit_on_error=False, print_error=False)
    except CycloptsError as exc:
        print_error(str(exc))
        return EXIT_USAGE
    try:
        result = command(*bound.args, **bound.kwargs)
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - never a traceback: one line, exit 1
        print_error(f"unexpected error: {describe_error(exc)}")
        return EXIT_FAILED
    return result if isinstance(result, int) else 0
