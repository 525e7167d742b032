"""The boto3 engine: botocore calls on a small thread pool (the seed's way, GIL-bound)."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from prefect_s3_concurrency.errors import (
    S3PipelineError,
    describe_error,
    object_error,
    translate_boto_error,
)
from prefect_s3_concurrency.s3.engines.base import (
    IGNORES_RANGE,
    Buffer,
    Digest,
    Engine,
    ObjectInfo,
    RangeNotSupported,
    write_at,
)
from prefect_s3_concurrency.s3.engines.listing import list_pages
from prefect_s3_concurrency.s3.integrity import CHUNK, normalize_etag
from prefect_s3_concurrency.s3.object_headers import ObjectAttributes
from prefect_s3_concurrency.s3.records import S3Object

T = TypeVar("T")
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes


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
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

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
        return ObjectInfo(
            int(head["ContentLength"]), normalize_etag(head.get("ETag")), head.get("Metadata") or {}
        )

    def _get_object(
        self, bucket: str, key: str, if_match: str | None, byte_range: tuple[int, int] | None
    ) -> Any:
        """GetObject; for a range, a 206, or a 200 carrying exactly that range (rclone)."""
        kwargs = {"IfMatch": f'"{if_match}"'} if if_match else {}
        if byte_range:
            kwargs["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        resp = self.client.get_object(Bucket=bucket, Key=key, **kwargs)
        if byte_range and not range_honoured(resp, byte_range):
            resp["Body"].close()
            IGNORES_RANGE.add(self.endpoint)
            raise RangeNotSupported(f"{self.endpoint} ignores Range")
        return resp

    async def get(
        self,
        bucket: str,
        key: str,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> AsyncIterator[Buffer]:
        def first() -> tuple[Any, bytes | None]:
            chunks = self._get_object(bucket, key, if_match, byte_range)["Body"].iter_chunks(CHUNK)
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
        metadata: Mapping[str, str] | None,
        *,
        attributes: ObjectAttributes | None = None,
    ) -> str:
        extra = _extra_args(metadata, attributes)
        resp = await self._s3(
            bucket,
            lambda: self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentMD5=base64.b64encode(md5).decode(),
                **extra,
            ),  # fmt: skip
        )
        return normalize_etag(resp.get("ETag"))

    async def put_multipart(
        self,
        bucket: str,
        key: str,
        path: Path,
        part_size: int,
        concurrency: int,
        metadata: Mapping[str, str] | None,
        *,
        attributes: ObjectAttributes | None = None,
    ) -> str:
        extra = _extra_args(metadata, attributes)
        created = await self._s3(
            bucket, lambda: self.client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
        )
        upload_id = created["UploadId"]
        try:
            parts = await _upload_parts(self, bucket, key, upload_id, path, part_size, concurrency)
            done = await self._call(
                lambda: self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            )
        except BaseException:
            await self.abort_upload(bucket, key, upload_id)
            raise
        return normalize_etag(done.get("ETag"))

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
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = list(keys[start : start + DELETE_BATCH])
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


async def _upload_parts(
    engine: Boto3Engine,
    bucket: str,
    key: str,
    upload_id: str,
    path: Path,
    part_size: int,
    concurrency: int,
) -> list[dict[str, Any]]:
    """Upload every part of ``path`` (``concurrency`` at a time).

    botocore's default flexible checksum (CRC32) goes with each part; the whole upload is then
    verified once against its ETag by the caller, so no MD5 pass is spent per part.
    """
    size = path.stat().st_size
    count = max(1, -(-size // part_size))
    gate = asyncio.Semaphore(max(1, concurrency))

    def send(number: int) -> dict[str, Any]:
        with open(path, "rb") as fh:  # one handle per part: a cancelled part owns its own
            fh.seek((number - 1) * part_size)
            data = fh.read(part_size)
        resp = engine.client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    async def one(number: int) -> dict[str, Any]:
        async with gate:
            return await engine._call(send, number)

    async with asyncio.TaskGroup() as group:  # the first failure cancels the others
        tasks = [group.create_task(one(n)) for n in range(1, count + 1)]
    return [t.result() for t in tasks]


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
