"""The engine interface: the few S3 calls a transfer needs, as coroutines.

Everything else (planning, key safety, temp files and rename, verification, skip/resume,
retries, summaries, sync) is written once on top of it (:mod:`s3.engines.objects`). An
engine is made for one batch task and used from that batch's event loop; the clients or
stores it wraps are cached per process and shared.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from botocore.exceptions import ClientError
from typing_extensions import Buffer  # what get() yields: anything with the buffer protocol

from prefect_s3_concurrency.errors import S3PipelineError
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.engines.listing import epoch
from prefect_s3_concurrency.s3.etag import ETag
from prefect_s3_concurrency.s3.integrity import StoredChecksum
from prefect_s3_concurrency.s3.object_headers import ObjectAttributes
from prefect_s3_concurrency.s3.records import S3Object

OnReply = Callable[[Mapping[str, str]], None]  # gets a GET reply's lower-case headers


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD tells about an object: size, ETag (unquoted, case kept), user metadata, and,
    when the engine sees them, the reply's headers (lower-case names) and LastModified."""

    size: int
    etag: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] | None = None
    last_modified: float | None = None

    @property
    def tag(self) -> ETag:
        """The ETag, knowing from the headers (when seen) whether it can be an MD5."""
        return ETag.parse(self.etag, self.headers)

    @property
    def checksum(self) -> StoredChecksum | None:
        """The full-object checksum S3 stores, if the reply carried one."""
        return StoredChecksum.from_headers(self.headers) if self.headers else None

    @property
    def parts(self) -> int | None:
        """``x-amz-mp-parts-count`` of a HEAD with ``PartNumber``, if given."""
        value = (self.headers or {}).get("x-amz-mp-parts-count")
        return int(value) if value and str(value).isdigit() else None


@dataclass(frozen=True)
class PutReply:
    """What S3 answered to an upload: the ETag and the reply's checksum headers (if seen)."""

    etag: str
    headers: Mapping[str, str] | None = None


def info_of(head: Mapping[str, Any]) -> ObjectInfo:
    """An :class:`ObjectInfo` from a botocore HeadObject reply."""
    headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return ObjectInfo(
        int(head["ContentLength"]), ETag.parse(head.get("ETag")).value,
        head.get("Metadata") or {}, {k.lower(): str(v) for k, v in headers.items()},
        epoch(head.get("LastModified")),
    )  # fmt: skip


class RangeNotSupported(S3PipelineError):
    """The server answered a ranged GET with the whole object, not the range asked for."""


class Digest(Protocol):
    """What :meth:`Engine.get_into` feeds: a ``hashlib`` object."""

    def update(self, data: Buffer, /) -> None:
        """Add ``data``."""


def write_at(fd: int, data: Buffer, offset: int, digest: Digest | None = None) -> int:
    """``pwrite`` all of ``data`` at ``offset`` (and feed ``digest``); return its length."""
    view = memoryview(data)
    if digest is not None:
        digest.update(view)
    total = len(view)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    return total


class Engine(abc.ABC):
    """One batch's access to S3. Every method is a coroutine of the batch's event loop."""

    name: ClassVar[str]
    #: A botocore client for the same connection: lists and aborts multipart uploads.
    client: Any

    @property
    def ranges_ok(self) -> bool:
        """False once the server proved it ignores ``Range`` (whole-object GETs from then)."""
        return self.endpoint not in caches.IGNORES_RANGE

    @property
    @abc.abstractmethod
    def endpoint(self) -> str:
        """The endpoint URL (no credentials in it), for messages."""

    @abc.abstractmethod
    def list(self, bucket: str, prefix: str) -> AsyncGenerator[list[S3Object], None]:
        """Every object under ``prefix`` (folder markers included), a page at a time.

        Raises:
            S3AccessError: For a missing bucket, refused credentials, an unreachable endpoint.
            ListingError: For a reply that cannot be trusted (never read as "the end").
        """

    @abc.abstractmethod
    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        """Size, ETag and user metadata of ``key``; None if it does not exist."""

    async def head_checked(
        self, bucket: str, key: str, part_number: int | None = None
    ) -> ObjectInfo | None:
        """HeadObject with ``ChecksumMode=ENABLED`` (or for one part), with its headers.

        Always botocore's (object_store exposes no checksum or encryption headers); counted
        in :data:`runtime.caches.VERIFY_REQUESTS`. None if the object does not exist.
        """
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        kwargs.update({"PartNumber": part_number} if part_number else {"ChecksumMode": "ENABLED"})
        caches.VERIFY_REQUESTS["head"] += 1
        try:
            head = await asyncio.to_thread(lambda: self.client.head_object(**kwargs))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return info_of(head)

    @abc.abstractmethod
    def get(
        self,
        bucket: str,
        key: str,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        on_reply: OnReply | None = None,
    ) -> AsyncIterator[Buffer]:
        """Stream the object's bytes (``byte_range`` is ``(start, end)``, end exclusive).

        ``if_match`` is sent as it is (the ETag's header form). A whole-object GET asks for
        the stored checksum (``ChecksumMode``); engines that see the reply's headers pass
        them to ``on_reply`` before the first block.

        Raises:
            RangeNotSupported: If a range was asked for and the server sent the whole object.
        """

    async def get_into(
        self,
        bucket: str,
        key: str,
        if_match: str | None,
        span: tuple[int, int],
        fd: int,
        digest: Digest | None = None,
    ) -> int:
        """GET ``span`` of ``key`` into ``fd`` at its offsets, feeding ``digest``.

        Returns:
            How many bytes arrived (the caller checks it against the span).

        Raises:
            RangeNotSupported: If the server sent the whole object instead of the range.
        """
        offset = span[0]
        async for block in self.get(bucket, key, if_match, span):
            write = asyncio.ensure_future(asyncio.to_thread(write_at, fd, block, offset, digest))
            try:
                offset += await asyncio.shield(write)
            except asyncio.CancelledError:  # the caller closes fd next: let the write end first
                await asyncio.wait([write])
                raise
        return offset - span[0]

    @abc.abstractmethod
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
        """Store ``data`` in one PUT, with checksums S3 verifies before it stores the bytes.

        ``md5`` is its digest, ``crc64`` its CRC64NVME (see the engines for which is sent);
        ``attributes`` are the headers to set (Content-Type, encryption, storage class...).
        """

    @abc.abstractmethod
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
        """Upload a file in ``part_size`` parts, each with a checksum S3 verifies, and the
        whole-object CRC64NVME on completion.

        ``unchanged`` is called before the upload completes and raises if the file changed
        meanwhile; ``attributes`` go with ``CreateMultipartUpload``. An upload that fails is
        aborted before the error propagates.
        """

    @abc.abstractmethod
    async def delete(self, bucket: str, keys: Sequence[str]) -> dict[str, str]:
        """Delete ``keys`` (DeleteObjects, 1,000 a request); return ``key -> reason`` for
        those not deleted (all of a request that failed as a whole)."""

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around a request made through :attr:`client` (a paced engine counts it)."""
        return contextlib.nullcontext()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what this engine holds for its batch (threads, not the shared clients)."""

    async def aclose(self) -> None:
        """:meth:`close`, from a coroutine."""
        self.close()
