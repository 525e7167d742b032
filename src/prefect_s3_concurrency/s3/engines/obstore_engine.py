"""The obstore engine: Rust ``object_store`` behind asyncio, with the GIL released.

Stores are built from the same settings as the boto3 client (:mod:`s3.connection`): the
endpoint and region boto3 resolved (explicit ``endpoint_url``, the block's client parameters,
``AWS_ENDPOINT_URL*``, profiles), path-style addressing for custom endpoints, and the very
credentials that client's boto3 session resolved (keys, session token, profile,
assume-role; refreshable ones are re-read, like ``obstore.auth.boto3.Boto3CredentialProvider``
does, without building a second session). The client factory has already registered the
secret key and token for log redaction.

``object_store`` cannot name every S3 key (``.``/``..`` or empty segments, control
characters, a trailing ``/``): those objects go through the boto3 engine instead, so no key
fails because of the engine. Listings are always botocore's (``object_store`` rewrites
folder-marker keys and aborts a listing on a key it cannot name). Ranged GETs on a server
that sends ranges with 200 instead of 206 (``rclone serve s3``), which ``object_store``
refuses, go through botocore too.

object_store sends no ``x-amz-checksum-*``/``Content-MD5`` and exposes no checksum or
encryption headers: multipart uploads (per-part and full-object CRC64NVME, the file checked
before completion) go through botocore; single PUTs stay here, protected by the SigV4
signed payload (S3 checks ``x-amz-content-sha256``). Verification asks botocore's HEAD only
when an MD5-shaped ETag does not settle it (:mod:`s3.engines.verify`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import obstore as obs
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines.base import (
    Buffer,
    Digest,
    Engine,
    ObjectInfo,
    OnReply,
    PutReply,
)
from prefect_s3_concurrency.s3.engines.boto3_engine import Boto3Engine
from prefect_s3_concurrency.s3.engines.listing import epoch
from prefect_s3_concurrency.s3.etag import unquote
from prefect_s3_concurrency.s3.records import S3Object

STREAM_CHUNK = 1024 * 1024
_STANDARD_ATTRIBUTES = {
    "content-type", "content-encoding", "content-disposition", "content-language",
    "cache-control", "storage-class",
}  # fmt: skip
# Keys object_store's Path cannot represent (it refuses them or rewrites them).
_UNREPRESENTABLE = re.compile(r"(^|/)\.{1,2}(/|$)|//|^/|/$|[\x00-\x1f\x7f]")
_lock = threading.Lock()
# Endpoints that send a range with 200 instead of 206 (rclone): object_store refuses those
# replies, so ranged GETs there go through botocore, which checks the Content-Range itself.
PARTIAL_AS_200: set[str] = set()


def representable(key: str) -> bool:
    """True if ``object_store`` can address ``key`` unchanged."""
    return bool(key) and _UNREPRESENTABLE.search(key) is None


def _is_aws(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


class ClientCredentials:
    """obstore credential provider reading a botocore client's own credentials.

    Static keys never expire; refreshable ones (assume-role, SSO, instance roles) are read
    again every few minutes, and botocore refreshes them before they expire.
    """

    REFRESH = timedelta(minutes=5)

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def __call__(self) -> dict[str, Any]:
        frozen = self.credentials.get_frozen_credentials()
        refreshing = hasattr(self.credentials, "refresh_needed")
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + self.REFRESH if refreshing else None,
        }


@lru_cache(maxsize=64)
def _cached_store(
    conn: S3Connection, bucket: str, endpoint: str, region: str, client: Any
) -> S3Store:
    # The client's session already resolved (and registered for redaction) the credentials.
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    config: dict[str, Any] = {"region": region}
    if endpoint and not _is_aws(endpoint):
        config.update(endpoint=endpoint, virtual_hosted_style_request=False)
    else:
        config["virtual_hosted_style_request"] = True
    kwargs: dict[str, Any] = {}
    if credentials is None:
        config["skip_signature"] = True
    else:
        kwargs["credential_provider"] = ClientCredentials(credentials)
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=10),
            "timeout": timedelta(hours=1),  # whole request; a stalled read fails sooner:
            "read_timeout": timedelta(seconds=60),
            "pool_idle_timeout": timedelta(seconds=50),
        },
        retry_config={
            "max_retries": max(0, conn.max_attempts - 1),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=15),
                "base": 2,
            },
            "retry_timeout": timedelta(minutes=3),
        },  # fmt: skip
        **kwargs,
    )


def store_for(conn: S3Connection, bucket: str, client: Any) -> S3Store:
    """The process's shared store for ``bucket`` on ``conn`` (built once, thread-safe)."""
    endpoint = str(client.meta.endpoint_url or "")
    region = str(client.meta.region_name or "us-east-1")
    with _lock:
        return _cached_store(conn, bucket, endpoint, region, client)


class ObstoreEngine(Engine):
    """S3 through obstore; keys it cannot name go through ``fallback`` (boto3)."""

    name = "obstore"

    def __init__(self, conn: S3Connection, client: Any, fallback: Boto3Engine) -> None:
        self.conn, self.client, self.fallback = conn, client, fallback
        self._endpoint = str(client.meta.endpoint_url or "")

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _store(self, bucket: str) -> S3Store:
        return store_for(self.conn, bucket, self.client)

    async def list(self, bucket: str, prefix: str) -> list[S3Object]:
        # object_store rewrites keys in listings ("a/" folder markers come back as "a") and
        # aborts on keys it cannot name, so listings are always botocore's, which are exact.
        return await self.fallback.list(bucket, prefix)

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        if not representable(key):
            return await self.fallback.head(bucket, key)
        try:
            res = await obs.get_async(self._store(bucket), key, options={"head": True})
        except (NotFoundError, FileNotFoundError):
            return None
        meta = {k: v for k, v in res.attributes.items() if k.lower() not in _STANDARD_ATTRIBUTES}
        return ObjectInfo(
            res.meta["size"], unquote(res.meta["e_tag"]), meta,
            last_modified=epoch(res.meta.get("last_modified")),
        )  # fmt: skip

    def _botocore_reads(self, key: str, byte_range: tuple[int, int] | None) -> bool:
        ranged_200 = byte_range is not None and self._endpoint in PARTIAL_AS_200
        return ranged_200 or not representable(key)

    async def get(
        self,
        bucket: str,
        key: str,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        on_reply: OnReply | None = None,
    ) -> AsyncIterator[Buffer]:
        if self._botocore_reads(key, byte_range):
            async for block in self.fallback.get(bucket, key, if_match, byte_range, on_reply):
                yield block
            return
        options: dict[str, Any] = {"if_match": if_match} if if_match else {}
        if byte_range:
            options["range"] = byte_range
        try:
            res = await obs.get_async(self._store(bucket), key, options=options)  # type: ignore[arg-type]
        except BaseError as exc:
            if byte_range and "non-partial" in str(exc):
                PARTIAL_AS_200.add(self._endpoint)  # nothing was yielded yet: botocore's turn
                async for block in self.fallback.get(bucket, key, if_match, byte_range):
                    yield block
                return
            raise
        start, end = res.range
        if end - start <= STREAM_CHUNK:  # small: one await instead of a stream's two
            yield await res.bytes_async()
            return
        async for block in res.stream(min_chunk_size=STREAM_CHUNK):
            yield block

    async def get_into(
        self,
        bucket: str,
        key: str,
        if_match: str | None,
        span: tuple[int, int],
        fd: int,
        digest: Digest | None = None,
    ) -> int:
        if self._botocore_reads(key, span):
            return await self.fallback.get_into(bucket, key, if_match, span, fd, digest)
        return await super().get_into(bucket, key, if_match, span, fd, digest)

    async def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        md5: bytes,
        crc64: int,
        metadata: Mapping[str, str] | None,
    ) -> PutReply:
        # object_store sends no Content-MD5 or x-amz-checksum-*, but signs the payload: S3
        # checks x-amz-content-sha256 (the body's SHA-256) before it stores the bytes.
        if not representable(key):
            return await self.fallback.put(bucket, key, data, md5, crc64, metadata)
        res = await obs.put_async(
            self._store(bucket), key, data, attributes=dict(metadata or {}), use_multipart=False
        )
        return PutReply(unquote(res["e_tag"]))

    async def put_multipart(
        self,
        bucket: str,
        key: str,
        path: Path,
        part_size: int,
        concurrency: int,
        metadata: Mapping[str, str] | None,
        unchanged: Callable[[], None],
    ) -> PutReply:
        # object_store cannot send the per-part and full-object CRC64NVME S3 verifies (nor
        # check the file before completing): large uploads go through botocore.
        return await self.fallback.put_multipart(
            bucket, key, path, part_size, concurrency, metadata, unchanged
        )

    async def delete(self, bucket: str, keys: Sequence[str]) -> dict[str, str]:
        return await self.fallback.delete(bucket, keys)

    def close(self) -> None:
        self.fallback.close()
