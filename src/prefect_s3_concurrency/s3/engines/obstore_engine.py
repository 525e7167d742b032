"""The obstore engine: Rust ``object_store`` behind asyncio, with the GIL released.

Stores are built from the same settings as the boto3 client (:mod:`s3.connection`): the
endpoint boto3 resolved (explicit ``endpoint_url``, the block's client parameters,
``AWS_ENDPOINT_URL*``, profiles), path-style addressing for custom endpoints, the bucket's own
region (:mod:`s3.regions`), and the credentials of the very boto3 session that made the
client, through obstore's public ``obstore.auth.boto3.Boto3CredentialProvider`` (keys,
session token, profile, assume-role; refreshable ones re-read every few minutes). The
client factory has already registered the secret key and token for log redaction. obstore's
exceptions are translated into the project's (:mod:`s3.engines.obstore_errors`), which also
retries requests in place of object_store (whose own retries would hide SlowDown replies
from the batch's pacer).

``object_store`` cannot name every S3 key (``.``/``..`` or empty segments, control
characters, a trailing ``/``): those objects go through the boto3 engine instead, so no key
fails because of the engine. Listings are always the boto3 engine's (``object_store``
rewrites folder-marker keys and aborts a listing on a key it cannot name). Ranged GETs on a server
that sends ranges with 200 instead of 206 (``rclone serve s3``), which ``object_store``
refuses, go through botocore too.

object_store sends no ``x-amz-checksum-*``/``Content-MD5`` and exposes no checksum or
encryption headers: multipart uploads (per-part and full-object CRC64NVME, the file checked
before completion) go through botocore; single PUTs stay here, protected by the SigV4
signed payload (S3 checks ``x-amz-content-sha256``). Verification asks botocore's HEAD only
when an MD5-shaped ETag does not settle it (:mod:`s3.engines.verify`).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import obstore as obs
from obstore.auth.boto3 import Boto3CredentialProvider
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import S3Store

from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.connection import S3Connection, get_session
from prefect_s3_concurrency.s3.engine_registry import EngineSpec, botocore_client
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
from prefect_s3_concurrency.s3.engines.objects import PART_CONCURRENCY
from prefect_s3_concurrency.s3.engines.obstore_errors import (
    missing_bucket,
    obstore_error,
    retrying,
)
from prefect_s3_concurrency.s3.etag import unquote
from prefect_s3_concurrency.s3.object_headers import (
    ObjectAttributes,
    encryption_of,
    store_encryption_config,
)
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.regions import bucket_region, endpoint_of, is_aws, known_region

STREAM_CHUNK = 1024 * 1024
CREDENTIALS_TTL = timedelta(minutes=5)
_STANDARD_ATTRIBUTES = {
    "content-type", "content-encoding", "content-disposition", "content-language",
    "cache-control", "storage-class",
}  # fmt: skip
# Keys object_store's Path cannot represent (it refuses them or rewrites them).
_UNREPRESENTABLE = re.compile(r"(^|/)\.{1,2}(/|$)|//|^/|/$|[\x00-\x1f\x7f]")
_lock = threading.Lock()
T = TypeVar("T")


def representable(key: str) -> bool:
    """True if ``object_store`` can address ``key`` unchanged."""
    return bool(key) and _UNREPRESENTABLE.search(key) is None


def store_config(endpoint: str, region: str) -> dict[str, Any]:
    """The ``S3Store`` config for a bucket in ``region`` reached through ``endpoint``.

    On AWS (no endpoint, or an ``amazonaws.com`` one) object_store builds the virtual-hosted
    URL on the bucket's own regional host (``https://<bucket>.s3.<region>.amazonaws.com``),
    so a bucket outside the client's region is never sent to another region's host, whose
    answer would be a 301 without ``Location``. Other endpoints are used as they are,
    path-style.
    """
    config: dict[str, Any] = {"region": region}
    if endpoint and not is_aws(endpoint):
        config.update(endpoint=endpoint, virtual_hosted_style_request=False)
    else:
        config["virtual_hosted_style_request"] = True
    return config


def _credential_provider(session: Any) -> Boto3CredentialProvider | None:
    """obstore's own provider over the session's credentials (None: unsigned requests).

    Refreshable credentials (assume-role, SSO, instance roles) are read again every few
    minutes; botocore refreshes them before they expire.
    """
    try:
        return Boto3CredentialProvider(session, ttl=CREDENTIALS_TTL)
    except ValueError:  # the session found no credentials: anonymous access
        return None


@caches.cached(maxsize=64)
def _cached_store(
    conn: S3Connection,
    bucket: str,
    endpoint: str,
    region: str,
    encryption: tuple[str | None, str | None] = (None, None),
) -> S3Store:
    # The session already resolved (and registered for redaction) the credentials.
    config = {**store_config(endpoint, region), **store_encryption_config(*encryption)}
    provider = _credential_provider(get_session(conn))
    kwargs: dict[str, Any] = {}
    if provider is None:
        config["skip_signature"] = True
    else:
        kwargs["credential_provider"] = provider
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
        # No retries inside: they would hide SlowDown from the pacer (see obstore_errors).
        retry_config={"max_retries": 0},
        **kwargs,
    )


def store_for(
    conn: S3Connection,
    bucket: str,
    client: Any,
    encryption: tuple[str | None, str | None] = (None, None),
) -> S3Store:
    """The process's shared store for ``bucket`` on ``conn`` (built once, thread-safe).

    It signs for the bucket's own region (:func:`s3.regions.bucket_region`). object_store
    sets server-side encryption per store: ``encryption`` (``(sse, kms key id)``) picks the
    store that uploads with it; reads use the plain one.
    """
    endpoint = endpoint_of(client)
    region = bucket_region(client, bucket)
    with _lock:
        return _cached_store(conn, bucket, endpoint, region, encryption)


def _attributes(
    metadata: Mapping[str, str] | None, attributes: ObjectAttributes | None
) -> dict[str, str]:
    """obstore ``attributes``: user metadata plus Content-Type, Cache-Control, storage class."""
    attrs = dict(metadata or {})
    if attributes is not None:
        attrs.update(attributes.object_store_attributes())
    return attrs


class ObstoreEngine(Engine):
    """S3 through obstore; keys it cannot name go through ``fallback`` (boto3)."""

    name = "obstore"

    def __init__(self, conn: S3Connection, client: Any, fallback: Boto3Engine) -> None:
        self.conn, self.client, self.fallback = conn, client, fallback
        self._endpoint = str(client.meta.endpoint_url or "")
        # This batch's stores by (bucket, region, encryption): store_for's process-wide cache
        # hashes the connection (its credentials block) on every lookup, once per request.
        self._stores: dict[tuple[str, str, tuple[str | None, str | None]], S3Store] = {}

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def _store(self, bucket: str, attributes: ObjectAttributes | None = None) -> S3Store:
        """The bucket's store; for uploads with encryption, the store that sets it."""
        region = known_region(self._endpoint, bucket)
        if region is None:  # one HeadBucket, off the loop
            region = await asyncio.to_thread(bucket_region, self.client, bucket)
        key = (bucket, region, encryption_of(attributes))  # a region learnt later: a new store
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = store_for(self.conn, bucket, self.client, key[2])
        return store

    def _error(self, exc: BaseException, bucket: str) -> BaseException:
        """``exc`` in the project's terms (see :mod:`s3.engines.obstore_errors`)."""
        signed = known_region(self._endpoint, bucket)
        return obstore_error(exc, bucket, self._endpoint, signed)

    async def _retrying(self, bucket: str, request: Callable[[], Awaitable[T]]) -> T:
        """``request()`` with the connection's attempts (see :func:`obstore_errors.retrying`)."""
        return await retrying(request, self.conn.max_attempts, lambda e: self._error(e, bucket))

    async def list(self, bucket: str, prefix: str) -> AsyncGenerator[list[S3Object], None]:
        # object_store rewrites keys in listings ("a/" folder markers come back as "a") and
        # aborts on keys it cannot name, so listings are always the fast signed GET's (or
        # botocore's), which are exact.
        async for page in self.fallback.list(bucket, prefix):
            yield page

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        if not representable(key):
            return await self.fallback.head(bucket, key)
        try:
            store = await self._store(bucket)
            res = await self._retrying(
                bucket, lambda: obs.get_async(store, key, options={"head": True})
            )
        except (NotFoundError, FileNotFoundError) as exc:
            if missing_bucket(exc):
                raise self._error(exc, bucket) from None
            return None
        except BaseError as exc:
            raise self._error(exc, bucket) from None
        meta = {k: v for k, v in res.attributes.items() if k.lower() not in _STANDARD_ATTRIBUTES}
        return ObjectInfo(
            res.meta["size"], unquote(res.meta["e_tag"]), meta,
            last_modified=epoch(res.meta.get("last_modified")),
        )  # fmt: skip

    def _botocore_reads(self, key: str, byte_range: tuple[int, int] | None) -> bool:
        ranged_200 = byte_range is not None and self._endpoint in caches.PARTIAL_AS_200
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
        store = await self._store(bucket)
        opts: Any = options
        try:
            res = await self._retrying(bucket, lambda: obs.get_async(store, key, options=opts))
        except (BaseError, FileNotFoundError) as exc:
            if byte_range and "non-partial" in str(exc):
                # nothing was yielded yet: botocore's turn
                caches.PARTIAL_AS_200.add(self._endpoint)
                async for block in self.fallback.get(bucket, key, if_match, byte_range):
                    yield block
                return
            raise self._error(exc, bucket) from None
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
        *,
        attributes: ObjectAttributes | None = None,
    ) -> PutReply:
        # object_store sends no Content-MD5 or x-amz-checksum-*, but signs the payload: S3
        # checks x-amz-content-sha256 (the body's SHA-256) before it stores the bytes.
        if not representable(key):
            return await self.fallback.put(
                bucket, key, data, md5, crc64, metadata, attributes=attributes
            )
        store = await self._store(bucket, attributes)
        try:
            res = await self._retrying(bucket, lambda: obs.put_async(
                store, key, data, attributes=_attributes(metadata, attributes),
                use_multipart=False,
            ))  # fmt: skip
        except BaseError as exc:
            raise self._error(exc, bucket) from None
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
        *,
        attributes: ObjectAttributes | None = None,
    ) -> PutReply:
        # object_store cannot send the per-part and full-object CRC64NVME S3 verifies (nor
        # check the file before completing): large uploads go through botocore.
        return await self.fallback.put_multipart(
            bucket, key, path, part_size, concurrency, metadata, unchanged, attributes=attributes
        )

    async def delete(self, bucket: str, keys: Sequence[str]) -> dict[str, str]:
        return await self.fallback.delete(bucket, keys)

    def close(self) -> None:
        self.fallback.close()


def _open(conn: S3Connection, pool_size: int, in_flight: int) -> ObstoreEngine:
    """One batch's engine: obstore on the batch's loop; botocore threads for the parts and
    for keys object_store cannot name."""
    client = botocore_client(conn, "obstore", pool_size, PART_CONCURRENCY)
    credentials = get_session(conn).get_credentials()  # signs the fast listing
    return ObstoreEngine(conn, client, Boto3Engine(client, PART_CONCURRENCY, credentials))


SPEC = EngineSpec(
    name="obstore", requests_in_flight=16, workers_per_batch=4, reaches_moto_mock=False,
    open=_open,
)  # fmt: skip
