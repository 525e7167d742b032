"""An engine whose every request passes one batch's :class:`~s3.pacing.Pacer`.

Each call holds a slot while its request is in flight (a GET until its body has been read,
a listing while a page is fetched); a multipart upload holds as many slots as parts it
sends at once; HEAD, DeleteObjects and the multipart sweep (``engine.slot()``) count too.
So a batch never has more requests in flight than the pacer's window, which is at most its
ceiling (the slots it holds of a shared request budget), and SlowDown lowers that window
for the whole batch, whichever engine sends the requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from pathlib import Path

from prefect_s3_concurrency.s3.engines.base import (
    Buffer,
    Digest,
    Engine,
    ObjectInfo,
    OnReply,
    PutReply,
)
from prefect_s3_concurrency.s3.engines.objects import PART_CONCURRENCY
from prefect_s3_concurrency.s3.object_headers import ObjectAttributes
from prefect_s3_concurrency.s3.pacing import Pacer
from prefect_s3_concurrency.s3.records import BatchResult, S3Object


class PacedEngine(Engine):
    """``inner``, with each request holding slots of ``pacer``."""

    def __init__(self, inner: Engine, pacer: Pacer) -> None:
        self.inner, self.pacer = inner, pacer
        self.name = inner.name  # type: ignore[misc]
        self.client = inner.client

    @property
    def endpoint(self) -> str:
        return self.inner.endpoint

    @property
    def ranges_ok(self) -> bool:
        return self.inner.ranges_ok

    def slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.pacer.slots(1)

    async def list(self, bucket: str, prefix: str) -> AsyncGenerator[list[S3Object], None]:
        pages = self.inner.list(bucket, prefix)
        try:
            while True:
                async with self.pacer.slots(1):
                    page = await anext(pages, None)
                if page is None:
                    return
                yield page
        finally:
            await pages.aclose()

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        async with self.pacer.slots(1):
            return await self.inner.head(bucket, key)

    async def head_checked(
        self, bucket: str, key: str, part_number: int | None = None
    ) -> ObjectInfo | None:
        async with self.pacer.slots(1):
            return await self.inner.head_checked(bucket, key, part_number)

    async def get(
        self,
        bucket: str,
        key: str,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        on_reply: OnReply | None = None,
    ) -> AsyncIterator[Buffer]:
        async with self.pacer.slots(1):
            async for block in self.inner.get(bucket, key, if_match, byte_range, on_reply):
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
        async with self.pacer.slots(1):
            return await self.inner.get_into(bucket, key, if_match, span, fd, digest)

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
        async with self.pacer.slots(1):
            return await self.inner.put(
                bucket, key, data, md5, crc64, metadata, attributes=attributes
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
        parts = max(1, min(concurrency, self.pacer.aimd.limit))  # parts sent at once
        async with self.pacer.slots(parts):
            return await self.inner.put_multipart(
                bucket, key, path, part_size, parts, metadata, unchanged, attributes=attributes
            )

    async def delete(self, bucket: str, keys: Sequence[str]) -> dict[str, str]:
        async with self.pacer.slots(1):  # DeleteObjects requests, one after the other
            return await self.inner.delete(bucket, keys)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_paced(
    engine: Engine, work: Callable[[Engine], Awaitable[BatchResult]], ceiling: int
) -> BatchResult:
    """Run a batch's ``work`` with every request through one pacer: at most ``ceiling`` in
    flight, fewer after SlowDown; the result counts the SlowDown replies."""
    pacer = Pacer(ceiling)
    result = await work(PacedEngine(engine, pacer))
    result.throttled += pacer.throttled_count
    return result


def request_ceiling(in_flight: int, max_requests: int | None) -> int:
    """Requests a batch may have in flight: ``max_requests`` (its budget's slots), else
    what it always could (``in_flight`` objects, each with its parts)."""
    return max_requests or max(1, in_flight) * PART_CONCURRENCY
