"""obstore's exceptions, translated into the project's error tree (see :mod:`errors`).

obstore raises a few classes (``PreconditionError``, ``NotFoundError``/``FileNotFoundError``,
``PermissionDeniedError``, ``UnauthenticatedError``) and a ``GenericError`` for everything
else; the reply's status and S3's XML error body are only in the message, so the status,
``<Code>`` and ``<Region>`` are read from there. Anything not recognised is returned as it
is (a reset connection or a short body stays retryable), never shown as a page of XML:
:func:`errors.describe_error` keeps the first line.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from obstore.exceptions import (
    BaseError,
    GenericError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from prefect_s3_concurrency.errors import (
    AccessDeniedError,
    EndpointUnreachableError,
    ObjectChangedError,
    S3PipelineError,
    ThrottledError,
    archived_error,
    changed_message,
)
from prefect_s3_concurrency.s3.pacing import backoff_delay, pause_before_retry, report_throttle
from prefect_s3_concurrency.s3.regions import region_from_reply
from prefect_s3_concurrency.s3.replies import s3_error

T = TypeVar("T")

_STATUS = re.compile(r"status code: (\d{3})\b")
_CODE = re.compile(r"<Code>\s*([A-Za-z0-9.]{1,64})\s*</Code>")
# object_store's message for a request that failed (not for a reply it could not use, such
# as a 200 to a ranged GET): the status, or the transport's error, follows.
_REQUEST_FAILED = re.compile(r"Error performing [A-Z]+ ")
_UNREACHABLE = re.compile(r"Connection refused|dns error|failed to lookup address", re.I)


def missing_bucket(exc: BaseException) -> bool:
    """True if a "not found" from obstore is S3's ``NoSuchBucket`` (not a missing key)."""
    return _status_and_code(str(exc))[1] == "NoSuchBucket"


def _status_and_code(text: str) -> tuple[str, str]:
    status = _STATUS.search(text)
    code = _CODE.search(text)
    return (status.group(1) if status else ""), (code.group(1) if code else "")


def obstore_error(
    exc: BaseException, bucket: str, endpoint: str, signed: str | None = None
) -> BaseException:
    """The project's error for an obstore exception (``exc`` itself when not recognised).

    Args:
        exc: What obstore raised.
        bucket: The bucket the request addressed.
        endpoint: The endpoint URL, for messages.
        signed: The region the store signs for.
    """
    if isinstance(exc, S3PipelineError):
        return exc
    text = str(exc)
    status, code = _status_and_code(text)
    if isinstance(exc, PreconditionError):
        return ObjectChangedError(changed_message(code or status or "412"))
    if code == "InvalidObjectState":
        return archived_error()
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
        return AccessDeniedError(
            f"access to bucket '{bucket}' at {endpoint} was denied ({code or status or '403'}): "
            "check the credentials"
        )
    if not isinstance(exc, (BaseError, FileNotFoundError)):
        return exc
    region = region_from_reply({}, text.encode(errors="replace"))
    known = s3_error(code or status, bucket, endpoint, region, signed)
    if known is not None:
        return known
    if status in {"400", "301"} and not code:  # a HEAD: no body, the status says little
        return S3PipelineError(
            f"S3 at {endpoint} refused a request for bucket '{bucket}' (HTTP {status}; a "
            f"bucket in another region than {signed or 'the configured one'}?)"
        )
    if not status and _UNREACHABLE.search(text):
        return EndpointUnreachableError(f"cannot reach the S3 endpoint at {endpoint}")
    return exc


def _retryable(exc: BaseException, error: BaseException) -> bool:
    """True for what object_store's own retries would retry: a SlowDown, a 5xx, a reset or
    timed-out connection (a failed request with no status), an unreachable endpoint."""
    if isinstance(error, (ThrottledError, EndpointUnreachableError)):
        return True
    text = str(exc)
    if error is not exc or type(exc) is not GenericError or not _REQUEST_FAILED.search(text):
        return False  # a 4xx in the project's terms, another class, a reply it cannot read
    status = _status_and_code(text)[0]
    return not status or status.startswith("5")


async def retrying(
    request: Callable[[], Awaitable[T]],
    attempts: int,
    translate: Callable[[BaseException], BaseException],
) -> T:
    """``request()``, made up to ``attempts`` times while it fails with a retryable error.

    Each SlowDown is reported to the running request's pacer (:func:`s3.pacing.report_throttle`);
    a retry waits without the request's slots and is paced as a new request
    (:func:`s3.pacing.pause_before_retry`).

    Args:
        request: Makes one attempt (an obstore call).
        attempts: Attempts in all, the first included (the connection's ``max_attempts``).
        translate: The project's error for obstore's (see :func:`obstore_error`).

    Raises:
        BaseException: obstore's own exception of the last attempt, untranslated (callers
            translate it, or read it, e.g. a missing key).
    """
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return await request()
        except (BaseError, FileNotFoundError) as exc:
            error = translate(exc)
            if isinstance(error, ThrottledError):
                report_throttle()
            if attempt >= attempts or not _retryable(exc, error):
                raise
        await pause_before_retry(backoff_delay(attempt))
    raise AssertionError("unreachable")
