"""The boto3 engine: botocore calls on a small thread pool (the seed's way, GIL-bound)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from prefect_s3_concurrency.errors import S3PipelineError, describe_error
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3 import limits
from prefect_s3_concurrency.s3.connection import S3Connection, get_session
from prefect_s3_concurrency.s3.engine_registry import EngineSpec, botocore_client
from prefect_s3_concurrency.s3.engines.base import (
    Buffer,
    Digest,
    Engine,
    ObjectInfo,
    OnReply,
    PutReply,
    RangeNotSupported,
    info_of,
    write_at,
)
from prefect_s3_concurrency.s3.engines.checksummed import put_object, upload_multipart
from prefect_s3_concurrency.s3.engines.listing import list_pages
from prefect_s3_concurrency.s3.engines.objects import PART_CONCURRENCY
from prefect_s3_concurrency.s3.integrity import CHUNK
from prefect_s3_concurrency.s3.object_headers import ObjectAttributes
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.replies import object_error, translate_boto_error

T = TypeVar("T")


class Boto3Engine(Engine):
    """S3 through a (shared, thread-safe) botocore client, ``threads`` calls at a time."""

    name = "boto3"

    def __init__(self, client: Any, threads: int = 4, credentials: Any = None) -> None:
        """Wrap ``client``; ``credentials`` (botocore's, from the session that made the
        client) let listings use the fast signed GET (:mod:`s3.engines.listing`)."""
        self.client, self.credentials = client, credentials
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="s3c-boto")

    @property
    def endpoint(self) -> str:
        return str(getattr(getattr(self.client, "meta", None), "endpoint_url", ""))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # In the caller's context: botocore's SlowDown hook finds the request's pacer there.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(context.run, fn, *args)
        )

    async def _s3(self, bucket: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the pool, its S3 errors in the project's terms (see errors)."""
        try:
            return await self._call(fn, *args)
        except ClientError as exc:
            raise object_error(exc, bucket, self.endpoint) from None

    async def list(self, bucket: str, prefix: str) -> AsyncGenerator[list[S3Object], None]:
        pages = list_pages(self.client, bucket, prefix, self.credentials)
        while True:
            try:
                page = await self._call(next, pages, None)
            except S3PipelineError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised as a clear one-line error
                raise translate_boto_error(exc, bucket, self.endpoint) from None
            if page is None:
                return
            yield page

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            head = await self._call(lambda: self.client.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise object_error(exc, bucket, self.endpoint) from None
        return info_of(head)

    def _get_object(
        self,
        bucket: str,
        key: str,
        if_match: str | None,
        byte_range: tuple[int, int] | None,
        on_reply: OnReply | None = None,
    ) -> Any:
        """GetObject; for a range, a 206, or a 200 carrying exactly that range (rclone)."""
        kwargs = {"IfMatch": if_match} if if_match else {}
        if byte_range:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        else:
            kwargs["ChecksumMode"] = "ENABLED"
        resp = self.client.get_object(Bucket=bucket, Key=key, **kwargs)
        if on_reply is not None:
            headers = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            on_reply({k.lower(): str(v) for k, v in headers.items()})
        if byte_range and not range_honoured(resp, byte_range):
            resp["Body"].close()
            caches.IGNORES_RANGE.add(self.endpoint)
            raise RangeNotSupported(f"{self.endpoint} ignores Range")
        return resp

    async def get(
        self,
        bucket: str,
        key: str,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        on_reply: OnReply | None = None,
    ) -> AsyncIterator[Buffer]:
        def first() -> tuple[Any, bytes | None]:
            resp = self._get_object(bucket, key, if_match, byte_range, on_reply)
            chunks = resp["Body"].iter_chunks(CHUNK)
            return chunks, next(chunks, None)

        chunks, block = await self._s3(bucket, first)
        while block is not None:
            yield block
            block = await self._call(next, chunks, None)

    async def get_into(
        self,
        bucket: str,
        key: str,
        if_match: str | None,
        span: tuple[int, int],
        fd: int,
        digest: Digest | None = None,
    ) -> int:
        # The whole range on one worker thread (no event-loop hop per block), writing through
        # its own duplicate of ``fd``: a thread still running after its download failed and
        # closed ``fd`` stops at the next block, and never writes into a reused descriptor.
        own, stop = os.dup(fd), threading.Event()

        def run() -> int:
            try:
                body = self._get_object(bucket, key, if_match, span)["Body"]
                offset = span[0]
                try:
                    for block in body.iter_chunks(CHUNK):
                        if stop.is_set():
                            break
                        offset += write_at(own, block, offset, digest)
                finally:
                    body.close()
                return offset - span[0]
            finally:
                os.close(own)

        try:
            return await self._s3(bucket, run)
        finally:
            stop.set()

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
        extra = _extra_args(metadata, attributes)
        return await self._s3(
            bucket, put_object, self.client, bucket, key, data, md5, crc64, extra
        )

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
        extra = _extra_args(metadata, attributes)
        try:
            return await upload_multipart(
                self, bucket, key, path, (part_size, concurrency), extra, unchanged
            )
        except ClientError as exc:
            raise object_error(exc, bucket, self.endpoint) from None

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort one multipart upload (best effort; the sweep catches what this misses)."""
        try:
            await self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id
                )
            )
        except Exception:  # noqa: BLE001 - the caller's error matters more
            pass

    async def delete(self, bucket: str, keys: Sequence[str]) -> dict[str, str]:
        failed: dict[str, str] = {}
        batch = limits.current().max_delete_keys  # the most keys one DeleteObjects takes
        for start in range(0, len(keys), batch):
            chunk = list(keys[start : start + batch])
            request = {"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            try:
                resp = await self._call(
                    lambda r=request: self.client.delete_objects(Bucket=bucket, Delete=r)
                )
            except Exception as exc:  # noqa: BLE001 - every key of the request failed
                reason = describe_error(translate_boto_error(exc, bucket, self.endpoint))
                failed.update(dict.fromkeys(chunk, f"delete failed: {reason}"))
                continue
            for err in resp.get("Errors", []):
                failed[err["Key"]] = f"delete failed: {err.get('Code', 'error')}"
        return failed

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def _extra_args(
    metadata: Mapping[str, str] | None, attributes: ObjectAttributes | None
) -> dict[str, Any]:
    """PutObject/CreateMultipartUpload arguments for user metadata and the upload headers."""
    extra: dict[str, Any] = {"Metadata": dict(metadata)} if metadata else {}
    if attributes is not None:
        extra.update(attributes.boto3_args())
    return extra


def range_honoured(resp: Any, span: tuple[int, int]) -> bool:
    """True if a GetObject reply holds exactly ``span``: a 206, or a 200 with that range.

    ``rclone serve s3`` answers a Range with 200 but sends only the range, with its
    ``Content-Range``; a server that really ignores Range sends no ``Content-Range``.
    """
    if resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206:
        return True
    wanted = f"bytes {span[0]}-{span[1] - 1}/"
    return (
        str(resp.get("ContentRange", "")).startswith(wanted)
        and int(resp.get("ContentLength", -1)) == span[1] - span[0]
    )


def _open(conn: S3Connection, pool_size: int, in_flight: int) -> Boto3Engine:
    """One batch's engine: a thread per request in flight (at least one per part)."""
    threads = max(in_flight, PART_CONCURRENCY)
    client = botocore_client(conn, "boto3", pool_size, threads)
    return Boto3Engine(client, threads, get_session(conn).get_credentials())


SPEC = EngineSpec(
    name="boto3", requests_in_flight=1, workers_per_batch=1, reaches_moto_mock=True, open=_open
)
