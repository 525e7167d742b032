"""S3's error replies in the project's terms, whichever library saw them.

An S3 error code (or HTTP status) becomes one error of :mod:`errors` (:func:`s3_error`);
botocore's exceptions go through :func:`object_error` (per object) and
:func:`translate_boto_error` (everything else). obstore's exceptions are read in
:mod:`s3.engines.obstore_errors` and meet the same :func:`s3_error`.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

from prefect_s3_concurrency.errors import (
    DELETED_MESSAGE,
    AccessDeniedError,
    BucketNotFoundError,
    EndpointUnreachableError,
    ObjectChangedError,
    S3AccessError,
    S3PipelineError,
    ThrottledError,
    WrongRegionError,
    archived_error,
    changed_message,
    describe_error,
)

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
    "403",
}

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}


def is_throttle(code: str) -> bool:
    """True if S3's error ``code`` asks to slow down (``SlowDown``, ``Throttling``...)."""
    return code in _THROTTLE_CODES


_REGION_CODES = {"AuthorizationHeaderMalformed", "PermanentRedirect", "301", "400"}


def s3_error(
    code: str,
    bucket: str,
    endpoint: str | None = None,
    region: str | None = None,
    signed: str | None = None,
) -> S3PipelineError | None:
    """The project's error for an S3 error ``code`` (or HTTP status), whichever library saw it.

    Args:
        code: S3's ``<Code>`` (``NoSuchBucket``, ``AccessDenied``...) or the status (``"403"``).
        bucket: The bucket the request addressed.
        endpoint: The endpoint URL, for the message (never includes credentials).
        region: The bucket's region, when the reply stated it.
        signed: The region the request was signed for.

    Returns:
        The matching error, or None for a code with no meaning of its own here.
    """
    where = f" at {endpoint}" if endpoint else ""
    if code == "InvalidObjectState":
        return archived_error()
    if code == "PermanentRedirect" or (region and region != signed and code in _REGION_CODES):
        return WrongRegionError(bucket, region, signed)
    if code in {"NoSuchBucket"}:
        return BucketNotFoundError(f"bucket '{bucket}' does not exist{where}")
    if code in _AUTH_CODES:
        return AccessDeniedError(
            f"access to bucket '{bucket}'{where} was denied ({code}): check the credentials"
        )
    if code in {"PreconditionFailed", "412"}:
        return ObjectChangedError(changed_message(code))
    if code in {"NoSuchKey"}:
        return ObjectChangedError(DELETED_MESSAGE)
    if code in _THROTTLE_CODES:
        return ThrottledError(f"S3{where} kept asking to slow down ({code}): retry later")
    return None


def _client_error(exc: ClientError, bucket: str, endpoint: str | None) -> S3PipelineError | None:
    """The project's error for a botocore ``ClientError`` S3 answered (None: no such meaning)."""
    error = exc.response.get("Error", {})
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = error.get("Region") or headers.get("x-amz-bucket-region")
    return s3_error(str(error.get("Code", "")), bucket, endpoint, region)


def object_error(exc: BaseException, bucket: str, endpoint: str | None = None) -> BaseException:
    """A per-object botocore error in the project's terms, or ``exc`` itself.

    Changed or deleted objects, denied access, a missing bucket, throttling and a wrong
    region get the same errors (messages, retries) as with the obstore engine; anything else
    (a short body, a reset) is left as it is, for the body retries.
    """
    if isinstance(exc, ClientError):
        return _client_error(exc, bucket, endpoint) or exc
    return exc


def translate_boto_error(
    exc: BaseException, bucket: str, endpoint: str | None = None
) -> BaseException:
    """Map a botocore exception to a clear one-line error of the project's tree.

    Args:
        exc: The exception botocore raised.
        bucket: The bucket the call addressed.
        endpoint: The endpoint URL, for the message (never includes credentials).

    Returns:
        An :class:`S3PipelineError` when the cause is known, else ``exc`` itself.
    """
    where = f" at {endpoint}" if endpoint else ""
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "404":  # a HEAD on the bucket: no body to tell more
            return BucketNotFoundError(f"bucket '{bucket}' does not exist{where}")
        known = _client_error(exc, bucket, endpoint)
        if known is not None:
            return known
        return S3AccessError(f"S3 error on bucket '{bucket}'{where}: {code or describe_error(exc)}")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return EndpointUnreachableError(
            f"cannot reach the S3 endpoint{where}: {describe_error(exc)}"
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AccessDeniedError(
            "no usable AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE, or pass a prefect-aws credentials block"
        )
    if isinstance(exc, BotoCoreError):
        return S3AccessError(
            f"S3 request for bucket '{bucket}'{where} failed: {describe_error(exc)}"
        )
    return exc
