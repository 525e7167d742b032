"""S3 client factory: prefect-aws blocks, the default boto3 chain, or an explicit endpoint."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.loaders import create_loader
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_s3_concurrency.tasks.errors import ConfigurationError
from prefect_s3_concurrency.tasks.redact import install_log_redaction, register_secret

install_log_redaction()  # botocore DEBUG logs would otherwise show signatures and tokens
BLOCK_TYPES = ("aws-credentials", "minio-credentials", "s3-bucket")
_lock = threading.Lock()
# One botocore data loader for every session this process makes: the S3 service model is
# parsed once per process (~0.1-0.4 s of JSON), as boto3's default session does for itself.
_LOADER = create_loader()


class S3Connection(BaseModel):
    """How to reach S3. Every field is optional: by default boto3's own chain is used.

    Attributes:
        credentials_block: A prefect-aws block, as ``name`` or ``type-slug/name``
            (``aws-credentials``, ``minio-credentials`` or ``s3-bucket``).
        endpoint_url: An S3-compatible endpoint (MinIO, rclone, Ceph...), overriding the block's.
        region: AWS region name.
        retry_mode: botocore retry mode.
        max_attempts: botocore attempts per request, including the first.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    credentials_block: str | None = Field(
        default=None, description="prefect-aws block: 'name' or 'aws-credentials/name'."
    )
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000."
    )
    region: str | None = Field(default=None, description="AWS region, e.g. us-east-1.")
    retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard", description="botocore retry mode."
    )
    max_attempts: int = Field(
        default=5, ge=1, le=20, description="botocore attempts per request (1 = no retry)."
    )

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url must start with http:// or https://, got {value!r}")
        return value or None


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
    if not conn.credentials_block:
        return _shared_loader(boto3.Session(region_name=conn.region)), {}
    block = _load_block(conn.credentials_block)
    creds = getattr(block, "credentials", block)  # S3Bucket wraps a credentials block
    params = creds.aws_client_parameters.get_params_override()
    return _shared_loader(creds.get_boto3_session()), params


def _shared_loader(session: boto3.Session) -> boto3.Session:
    session._session.register_component("data_loader", _LOADER)
    return session


def _register_secrets(session: boto3.Session, params: dict[str, Any]) -> None:
    """Mask this client's secret key and session token in all logs."""
    register_secret(params.get("aws_secret_access_key"))
    register_secret(params.get("aws_session_token"))
    creds = session.get_credentials()
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        register_secret(frozen.secret_key)
        register_secret(frozen.token)


@lru_cache(maxsize=32)
def _cached_client(conn: S3Connection, max_pool_connections: int) -> Any:
    session, params = _session_and_params(conn)
    _register_secrets(session, params)
    config = client_config(conn, max_pool_connections)
    if isinstance(params.get("config"), Config):
        config = params.pop("config").merge(config)
    if conn.endpoint_url:
        params["endpoint_url"] = conn.endpoint_url
    if conn.region:
        params["region_name"] = conn.region
    return session.client("s3", config=config, **params)


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


def endpoint_of(client: Any) -> str:
    """Return the endpoint URL a client talks to (no credentials in it)."""
    return str(client.meta.endpoint_url)
