"""One-line, user-facing errors: the project's error tree and how errors become one line.

S3's error replies (botocore's and obstore's) become these errors in :mod:`s3.replies`.
"""

from __future__ import annotations

import errno
import functools
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import quote

from botocore.exceptions import (
    ClientError,
    FlexibleChecksumError,
)

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object, keep: str = "") -> str:
    """Return ``text`` with every non-printable character escaped, so it stays on one line.

    The one escaping helper: keys, paths and messages reach errors, summaries, the command
    line's output and every log record through it. Control characters (ESC, newlines,
    DEL...) become ``\\x1b``, ``\\n``..., undecodable file-name bytes (surrogate escapes)
    become ``\\xNN`` and other invisible code points ``\\uNNNN``. Printable text, spaces
    and backslashes are kept as they are.

    Args:
        text: Anything; its ``str()`` is escaped.
        keep: Characters left as they are (the log records keep tab and newline).
    """
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch in keep:
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
    return "".join(out)


class S3PipelineError(Exception):
    """Base class for the errors this project raises; the message is one line.

    It pickles (to and from process-pool workers, into Prefect's results) by calling the
    class again with the arguments it was made with, then restoring its attributes: a
    subclass with its own ``__init__`` keeps its fields without a ``__reduce__`` of its own.
    """

    _made_with: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        """Remember the constructor's arguments (``__init__`` replaces ``args``)."""
        error = super().__new__(cls, *args)
        error._made_with = (args, kwargs)
        return error

    def __reduce__(self) -> tuple[Any, ...]:
        args, kwargs = self._made_with
        remake = functools.partial(type(self), **kwargs) if kwargs else type(self)
        return (remake, args, self.__dict__)


class FailedWithPayload(S3PipelineError):
    """Some objects failed; the error carries everything its run, batch or chunk did.

    Raised so that the run or task shows Failed in the UI, while the payload (a summary, a
    batch result or a chunk report) keeps what succeeded and why the rest failed.
    """


class ConfigurationError(S3PipelineError, ValueError):
    """Bad input: an invalid URL, parameter, block name or destination."""


class S3AccessError(S3PipelineError):
    """S3 refused or could not serve a request (missing bucket, credentials, endpoint)."""


class AccessDeniedError(S3AccessError):
    """S3 refused the credentials or the permission (403, bad key, expired token)."""


class BucketNotFoundError(S3AccessError):
    """The bucket does not exist at this endpoint."""


class EndpointUnreachableError(S3AccessError):
    """Nothing answered at the endpoint (refused, unknown host, timed out)."""


class WrongRegionError(S3AccessError):
    """The bucket lives in another region than the requests were signed for."""

    def __init__(self, bucket: str, region: str | None, signed: str | None = None) -> None:
        self.bucket, self.region = bucket, region
        where = f"is in region {region}" if region else "is in another region"
        signed_for = f" (requests were signed for {signed})" if signed else ""
        fix = f": pass --region {region}" if region else ": pass the bucket's --region"
        super().__init__(f"bucket '{bucket}' {where}{signed_for} and S3 refused them{fix}")


class ObjectChangedError(S3PipelineError):
    """The object was overwritten or deleted after it was listed (re-run for the new one)."""


class ThrottledError(S3PipelineError):
    """S3 kept answering "slow down" after the library's own retries (worth a retry)."""


class ListingError(S3PipelineError):
    """A listing reply that cannot be trusted: never read as "empty" or "the end"."""


class IntegrityError(S3PipelineError):
    """A transferred object does not match its expected size or checksum."""


class UnsafeKeyError(S3PipelineError, ValueError):
    """An object key would map to a path outside the destination directory."""


class UnsupportedObjectError(S3PipelineError):
    """An object S3 will not serve as it is: archived, or encrypted with a customer key."""

    archived = False  # True: archived (S3's InvalidObjectState), not restored


def archived_error(storage_class: str = "") -> UnsupportedObjectError:
    """The one line for an archived object (``storage_class`` as listed, if known)."""
    where = storage_class if storage_class not in ("", "STANDARD") else "an archive class"
    error = UnsupportedObjectError(f"archived in {where}: restore it first")
    error.archived = True
    return error


class LocalIOError(S3PipelineError):
    """A local file could not be written or read (disk full, permissions...); not retried."""


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}
# Local errors a retry cannot fix (the batch task is not retried for these alone).
_PERMANENT_ERRNOS = _DISK_FULL | _NO_ACCESS | {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR}
# Errors a retry of the same batch cannot fix (a re-run, new credentials or options can).
_PERMANENT_ERRORS = (
    LocalIOError, UnsafeKeyError, ConfigurationError, AccessDeniedError, BucketNotFoundError,
    WrongRegionError, ObjectChangedError, UnsupportedObjectError,
)  # fmt: skip


def local_io_error(
    exc: OSError, path: str | os.PathLike[str], verb: str = "write"
) -> OSError | LocalIOError:
    """Turn a local ``OSError`` into a clear one-line :class:`LocalIOError` when it is permanent.

    Args:
        exc: The error from the file system.
        path: The file that was being written or read.
        verb: ``"write"`` or ``"read"``, for the message.

    Returns:
        A :class:`LocalIOError` for a full disk, missing permissions and the like, else ``exc``.
    """
    if exc.errno in _DISK_FULL:
        return LocalIOError(
            f"no space left on the device holding {os.path.dirname(os.fspath(path))!r}: "
            "free some space and re-run"
        )
    if exc.errno in _PERMANENT_ERRNOS:
        return LocalIOError(f"cannot {verb} {os.fspath(path)!r}: {exc.strerror}")
    return exc


def changed_message(code: str) -> str:
    """The one line for an object overwritten during the run (``code``: what S3 answered)."""
    return (
        "the object changed during the run (its ETag no longer matches the listing, "
        f"{code}): re-run to transfer the new version"
    )


DELETED_MESSAGE = "the object was deleted during the run (it was listed, now it is gone)"


def is_permanent(exc: BaseException) -> bool:
    """Return True for errors a retry cannot fix: local disk/permission problems, unsafe keys."""
    if isinstance(exc, _PERMANENT_ERRORS):
        return True
    return isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS


def refused_object(
    exc: BaseException, key: str = "", storage_class: str = ""
) -> UnsupportedObjectError | None:
    """The one-line error for an object S3 refuses to serve as it is, if ``exc`` is one.

    ``InvalidObjectState`` (403): archived in GLACIER or DEEP_ARCHIVE and not restored. An
    SSE-C object read without its key: 400 naming server-side encryption parameters. Our
    own errors, and the object's key (quoted or not) in a message, never count; an engine's
    archived error is restated with ``storage_class``.
    """
    if isinstance(exc, UnsupportedObjectError):
        return archived_error(storage_class) if exc.archived else exc
    if isinstance(exc, S3PipelineError):
        return None
    text = str(exc)
    for form in filter(None, {key, quote(key)}):
        text = text.replace(form, "")
    code = ""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, text = str(error.get("Code", "")), f"{error.get('Message', '')} {text}"
    if code == "InvalidObjectState" or "InvalidObjectState" in text:
        return archived_error(storage_class)
    lowered = text.lower()
    if "customer" in lowered and "encrypt" in lowered or "sse-c" in lowered or (
        "server side encryption" in lowered and "correct parameters" in lowered
    ):
        return UnsupportedObjectError(
            "encrypted with a customer-provided key: not supported"
        )
    return None


def _changed_object(exc: BaseException) -> str | None:
    """Say "changed during the run" for the errors an object overwritten mid-run causes."""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"PreconditionFailed", "412"}:
            return changed_message(code)
    if isinstance(exc, FlexibleChecksumError):
        return (
            "the body does not match the checksum S3 sent: the object may have changed during "
            f"the run, or the body was corrupted in transit (FlexibleChecksumError: "
            f"{printable(str(exc).splitlines()[0] if str(exc) else '')})"
        )
    return None


def describe_error(exc: BaseException | None) -> str:
    """Return a one-line description of ``exc`` without a traceback.

    Args:
        exc: Any exception (None when the cause is unknown).

    Returns:
        ``"ExceptionName: first line of message"``, or the message alone for our own errors.
    """
    if exc is None:
        return "unknown error"
    changed = _changed_object(exc)
    if changed:
        return changed
    if isinstance(exc, S3PipelineError):  # one line by design: a line break came from a key
        return printable(str(exc)) if str(exc) else type(exc).__name__
    text = [line.strip(" -") for line in str(exc).strip().splitlines() if line.strip(" -")]
    if not text:
        return type(exc).__name__
    if len(text) > 1 and not text[0].endswith(":"):  # a key or path with a line break in it
        return f"{type(exc).__name__}: {printable(str(exc).strip())}"
    line = text[0]
    if line.endswith(":") and len(text) > 1:  # "Invalid parameters:\n - x: ..." -> one line
        line = f"{line} {'; '.join(text[1:])}"
    return f"{type(exc).__name__}: {printable(line)}"


def _listed(keys: list[str], most: int = 10) -> str:
    shown = ", ".join(printable(k) for k in keys[:most])
    return shown + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


def objects_failed(failed: Mapping[str, str]) -> str:
    """The one line of a batch or chunk whose objects ``failed`` (key -> reason)."""
    return f"{len(failed)} object(s) failed: {_listed(sorted(failed), 5)}"


def run_failure_message(what: str, failed: dict[str, str], rejected: dict[str, str]) -> str:
    """The one-line message of a run that ends Failed: failed and rejected keys, reasons.

    Args:
        what: The run, e.g. ``"upload"`` or ``"square-objects"``.
        failed: Key -> reason of the objects that failed.
        rejected: Key -> reason of the keys (or paths) refused before any transfer.
    """
    parts = []
    if failed:
        reasons = Counter(failed.values())
        reason, count = reasons.most_common(1)[0]
        share = "all" if count == len(failed) else str(count)
        parts.append(
            f"{len(failed)} object(s) failed in {what}: {_listed(sorted(failed))} "
            f"({share}: {printable(reason)})"
        )
    if rejected:
        reason, count = Counter(rejected.values()).most_common(1)[0]
        share = "all" if count == len(rejected) else str(count)
        parts.append(
            f"{len(rejected)} key(s) rejected in {what}: {_listed(sorted(rejected))} "
            f"({share}: {printable(reason)}; allow_rejected=True accepts them)"
        )
    return "; ".join(parts) or f"{what} failed"
