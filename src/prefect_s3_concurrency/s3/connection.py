"""S3 client factory: prefect-aws blocks, the default boto3 chain, or an explicit endpoint."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Literal, Union

import boto3
from botocore.config import Config
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from botocore.loaders import create_loader
from prefect_aws import AwsCredentials, MinIOCredentials
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.parameters import MaxAttempts
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.runtime.redact import install_log_redaction, register_secret
from prefect_s3_concurrency.s3.pacing import report_throttle
from prefect_s3_concurrency.s3.replies import is_throttle

BLOCK_TYPES = ("aws-credentials", "minio-credentials", "s3-bucket")
_lock = threading.Lock()
CredentialsBlock = Union[AwsCredentials, MinIOCredentials]  # noqa: UP007 - Prefect's form needs it
if TYPE_CHECKING:
    from prefect_aws import S3Bucket
# One botocore data loader for every session this process makes: the S3 service model is
# parsed once per process (~0.1-0.4 s of JSON), as boto3's default session does for itself.
_LOADER = create_loader()


# "user:password@" in a URL: never accepted, since Prefect stores a run's parameters.
URL_CREDENTIALS = (
    "the endpoint URL must not contain a user name or password (user:password@host): "
    "give credentials with --credentials or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


# The same rule in the parameter schema, which a deployment's API checks before it stores a
# run: http(s), and no '@' before the path.
ENDPOINT_PATTERN = r"^https?://[^/?#@]*([/?#].*)?$"


def refuse_url_credentials(url: str | None) -> None:
    """Raise ValueError (naming no part of ``url``) if ``url`` carries ``user[:password]@``."""
    if url and "@" in url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]:
        raise ValueError(URL_CREDENTIALS)


class S3Connection(BaseModel):
    """How to reach S3. Every field is optional: by default boto3's own chain is used.

    Attributes:
        credentials_block: A prefect-aws block, as ``name`` or ``type-slug/name``
            (``aws-credentials``, ``minio-credentials`` or ``s3-bucket``).
        credentials: A loaded credentials block (the flows' block-typed ``credentials``
            parameter lands here); not part of the run form's ``connection`` object.
        endpoint_url: An S3-compatible endpoint (MinIO, rclone, Ceph...), overriding the block's.
        region: AWS region name.
        retry_mode: botocore retry mode.
        max_attempts: botocore attempts per request, including the first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    credentials_block: str | None = Field(
        default=None,
        description="A saved prefect-aws block by name ('name' or 'aws-credentials/name'); "
        "or pick one in the 'credentials' parameter instead.",
    )
    credentials: SkipJsonSchema[CredentialsBlock | None] = Field(default=None, exclude=True)
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000.",
        json_schema_extra={"pattern": ENDPOINT_PATTERN},  # the API refuses a run's password
    )
    region: str | None = Field(default=None, description="AWS region, e.g. us-east-1.")
    retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard", description="botocore retry mode."
    )
    max_attempts: MaxAttempts = 5

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        refuse_url_credentials(value)
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must start with http:// or https://, got {value!r}")
        return value or None

    @model_validator(mode="after")
    def _one_credential_source(self) -> S3Connection:
        if self.credentials is not None and self.credentials_block:
            raise ValueError("give either a credentials block or credentials_block, not both")
        return self

    def with_credentials(self, block: CredentialsBlock | None) -> S3Connection:
        """Return a copy that authenticates with ``block`` (unchanged if None).

        Raises:
            ConfigurationError: If ``credentials_block`` is set too.
        """
        if block is None:
            return self
        if self.credentials_block:
            raise ConfigurationError(
                f"both a credentials block and credentials_block={self.credentials_block!r} "
                "were given: use one"
            )
        return self.model_copy(update={"credentials": block})


def moto_mock_active() -> bool:
    """True while moto's in-process ``mock_aws`` patches botocore (it reaches botocore only)."""
    models = sys.modules.get("moto.core.models")
    stubber = getattr(models, "botocore_stubber", None)
    return bool(getattr(stubber, "enabled", False))


def client_config(conn: S3Connection, max_pool_connections: int) -> Config:
    """Return the botocore Config for ``conn`` with a pool sized for the thread count."""
    return Config(
        max_pool_connections=max(10, max_pool_connections),
        retries={"mode": conn.retry_mode, "max_attempts": conn.max_attempts},
        connect_timeout=10,
        read_timeout=60,
        tcp_keepalive=True,
    )


def _load_block(name: str) -> Any:
    """Load a prefect-aws credentials or bucket block by name."""
    import prefect_aws  # noqa: F401  (registers the block types)
    from prefect.blocks.core import Block

    slugs = [name.split("/", 1)[0]] if "/" in name else list(BLOCK_TYPES)
    bare = name.split("/", 1)[1] if "/" in name else name
    if slugs[0] not in BLOCK_TYPES:
        raise ConfigurationError(
            f"unsupported block type {slugs[0]!r}: use one of {', '.join(BLOCK_TYPES)}"
        )
    for slug in slugs:
        try:
            return Block.load(f"{slug}/{bare}")
        except ValueError:
            continue
    raise ConfigurationError(
        f"no {' or '.join(slugs)} block named {bare!r} (create it with the Prefect UI or "
        "`AwsCredentials(...).save(name)`)"
    )


def _session_and_params(conn: S3Connection) -> tuple[boto3.Session, dict[str, Any]]:
    """Return a boto3 session and client kwargs for ``conn``."""
    if conn.credentials is not None:
        creds: Any = conn.credentials
    elif conn.credentials_block:
        block = _load_block(conn.credentials_block)
        creds = getattr(block, "credentials", block)  # S3Bucket wraps a credentials block
    else:
        return _shared_loader(boto3.Session(region_name=conn.region)), {}
    params = creds.aws_client_parameters.get_params_override()
    return _shared_loader(creds.get_boto3_session()), params


def _shared_loader(session: boto3.Session) -> boto3.Session:
    session._session.register_component("data_loader", _LOADER)
    return session


def _register_secrets(session: boto3.Session, params: dict[str, Any]) -> None:
    """Mask this client's secret key and session token in all logs (from now on, also where
    no entry point installed the redaction: a Dask worker, a library caller)."""
    install_log_redaction()
    register_secret(params.get("aws_secret_access_key"))
    register_secret(params.get("aws_session_token"))
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)


@caches.cached(maxsize=32)
def _cached_session(conn: S3Connection) -> tuple[boto3.Session, dict[str, Any]]:
    session, params = _session_and_params(conn)
    _register_secrets(session, params)
    return session, params


def get_session(conn: S3Connection | None = None) -> boto3.Session:
    """The boto3 session this process's clients for ``conn`` are made from (cached).

    Its ``get_credentials()`` is the very (refreshing) credentials object those clients sign
    with: the obstore engine and the fast listing sign with it too.
    """
    with _lock:
        return _cached_session(conn or S3Connection())[0]


@caches.cached(maxsize=32)
def _cached_client(conn: S3Connection, max_pool_connections: int) -> Any:
    session, shared = _cached_session(conn)
    params = dict(shared)
    config = client_config(conn, max_pool_connections)
    if isinstance(params.get("config"), Config):
        config = params.pop("config").merge(config)
    if conn.endpoint_url:
        params["endpoint_url"] = conn.endpoint_url
    if conn.region:
        params["region_name"] = conn.region
    client = session.client("s3", config=config, **params)
    _fail_fast_until_reached(client)
    client.meta.events.register("before-call.s3.GetObject", _no_whole_checksum_on_ranges)
    client.meta.events.register("needs-retry.s3", _report_throttle)
    return client


def _report_throttle(response: Any = None, **_: Any) -> None:
    """Tell the request's pacer about each SlowDown reply, retried by botocore or not."""
    parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
    code = str((parsed or {}).get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""
    if is_throttle(code):
        report_throttle()


def _no_whole_checksum_on_ranges(params: dict[str, Any], **_: Any) -> None:
    """Skip botocore's response checksum on ranged GETs (the caller verifies the parts).

    Some servers (``rclone serve s3``) send the whole object's ``x-amz-checksum-*`` with a
    range, which botocore would check against the range's bytes and fail.
    """
    if "Range" in params.get("headers", {}):
        params.get("context", {}).get("checksum", {}).pop("response_algorithms", None)


def _fail_fast_until_reached(client: Any) -> None:
    """Do not retry connection errors until the endpoint has answered once.

    A wrong or closed endpoint would otherwise cost every retry's backoff (about 18 s with
    5 attempts) before the first listing fails; once any response came back, connection
    errors are retried as configured (a server restarting mid-run).
    """
    reached = False

    def check(response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        nonlocal reached
        if response is not None:
            reached = True
        elif not reached and isinstance(
            caught_exception, (EndpointConnectionError, ConnectTimeoutError)
        ):
            raise caught_exception

    client.meta.events.register_first("needs-retry.s3", check)


def get_s3_client(conn: S3Connection | None = None, max_pool_connections: int = 10) -> Any:
    """Return a thread-safe S3 client, cached per process for this connection and pool size.

    Args:
        conn: Connection settings; None means boto3's default chain.
        max_pool_connections: At least the number of threads that share the client.

    Returns:
        A ``botocore`` S3 client. Never logs or exposes the credentials it was built from.
    """
    with _lock:  # boto3 session and client creation are not thread-safe
        return _cached_client(conn or S3Connection(), max_pool_connections)


def bucket_location(block: S3Bucket, prefix: str = "") -> tuple[str, str, CredentialsBlock]:
    """Return ``(bucket, prefix, credentials)`` of an ``S3Bucket`` block.

    Args:
        block: The block; its ``bucket_folder`` is the base of ``prefix``.
        prefix: A further prefix under the block's folder.
    """
    folder = "/".join(p.strip("/") for p in (block.bucket_folder, prefix) if p.strip("/"))
    return block.bucket_name, folder, block.credentials
