"""Large downloads: parallel ranged GETs written at their offsets, hashed as they land.

Each range is fetched by the engine's :meth:`~s3.engines.base.Engine.get_into`, which
writes the bytes at their offsets and feeds a :class:`~s3.integrity.Hashes` on a worker
thread, so the parts of one object, and the objects of one batch, hash in parallel:

* every range gets its CRC64NVME; they combine into the whole object's;
* when the ranges are the upload's parts (part size learned from S3), each range also gets
  its MD5, for a multipart ETag (``md5-of-part-md5s-N``);
* for an MD5-shaped ETag (``rclone serve s3``, single PUTs), one MD5 in object order is
  computed by :class:`InOrderDigest` on its own thread from the file while the later ranges
  are still arriving (the written prefix is still in the page cache).

What these are checked against is decided by :mod:`s3.engines.verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading

from prefect_s3_concurrency.errors import IntegrityError
from prefect_s3_concurrency.s3.engines.base import Engine
from prefect_s3_concurrency.s3.engines.verify import Landed
from prefect_s3_concurrency.s3.integrity import CHUNK, Hashes, combine_all
from prefect_s3_concurrency.s3.records import S3Object

Span = tuple[int, int]


class InOrderDigest:
    """MD5 of a file whose ranges are written in any order, hashed in order on its own thread.

    :meth:`start` runs the hashing on a thread of its own (never a shared pool's: it waits
    for the download, whose writes may need that pool); it waits for each range in turn,
    reads it back with ``pread`` through its own duplicate of the fd (closed when it ends, so
    it never reads a reused descriptor) and hashes it. :meth:`done` marks a range written;
    :meth:`stop` ends a run whose download failed, within one read.
    """

    def __init__(self, fd: int, spans: list[Span]) -> None:
        self._fd, self._spans = os.dup(fd), spans
        self._written: set[int] = set()
        self._stopped = False
        self._cond = threading.Condition()

    def done(self, index: int) -> None:
        """Mark range ``index`` as written."""
        with self._cond:
            self._written.add(index)
            self._cond.notify()

    def stop(self) -> None:
        """Make :meth:`run` return early (the download failed)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def start(self) -> asyncio.Future[str | None]:
        """Run :meth:`run` on a new thread; its result as a future of the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()

        def settle(result: str | None, error: BaseException | None) -> None:
            if not future.done():
                future.set_exception(error) if error else future.set_result(result)

        def main() -> None:
            try:
                result, error = self.run(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        # a failed download does not await it: its error is then not worth a warning
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        threading.Thread(target=main, name="s3c-md5", daemon=True).start()
        return future

    def run(self) -> str | None:
        """Hash every range in order; the hex MD5, or None if stopped first."""
        digest = hashlib.md5(usedforsecurity=False)
        try:
            for index, (start, end) in enumerate(self._spans):
                with self._cond:
                    while index not in self._written and not self._stopped:
                        self._cond.wait()
                while start < end:
                    if self._stopped:
                        return None
                    block = os.pread(self._fd, min(CHUNK, end - start), start)
                    if not block:
                        raise IntegrityError("file shorter than written")
                    digest.update(block)
                    start += len(block)
            return digest.hexdigest()
        finally:
            os.close(self._fd)


def spans_of(size: int, part_size: int) -> list[Span]:
    """Cut ``size`` bytes into ``(start, end)`` ranges of ``part_size`` (end exclusive)."""
    return [(s, min(s + part_size, size)) for s in range(0, size, part_size)]


async def ranges_into(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    fd: int,
    part_size: int,
    concurrency: int,
    per_part: bool,
) -> Landed:
    """Download ``obj`` into ``fd`` as parallel ranged GETs; return what was computed.

    The first range goes alone: a server that ignores ``Range`` is found there
    (:class:`~s3.engines.base.RangeNotSupported`) before anything else is asked.

    Args:
        engine: The batch's engine.
        bucket: Source bucket.
        obj: The listed object (size and ETag).
        fd: The open temp file, truncated to ``obj.size`` here.
        part_size: Bytes per ranged GET.
        concurrency: Ranged GETs in flight for this object.
        per_part: The ranges are the upload's parts: compute each one's MD5.

    Raises:
        IntegrityError: If a range came back short.
        RangeNotSupported: If the server sent the whole object for the first range.
    """
    spans = spans_of(obj.size, part_size)
    os.ftruncate(fd, obj.size)
    ordered = InOrderDigest(fd, spans) if obj.tag.md5 is not None else None
    hashing = ordered.start() if ordered else None
    gate = asyncio.Semaphore(max(1, concurrency))
    if_match = obj.tag.header if obj.etag else None

    async def one(index: int) -> Hashes:
        hashes = Hashes(md5=per_part)
        async with gate:
            got = await engine.get_into(bucket, obj.key, if_match, spans[index], fd, hashes)
        if got != spans[index][1] - spans[index][0]:
            raise IntegrityError(f"short range of {obj.key}: got {got} bytes")
        if ordered is not None:
            ordered.done(index)
        return hashes

    try:
        parts = [await one(0)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i)) for i in range(1, len(spans))]
        except BaseExceptionGroup as failed:  # the first error, as download_one expects it
            raise failed.exceptions[0] from None
        parts += [t.result() for t in tasks]
        md5 = await hashing if hashing is not None else None
    finally:
        if ordered is not None:
            ordered.stop()  # a no-op once it finished; it reads through its own fd anyway
    return Landed(
        combine_all("crc64nvme", parts), md5,
        [p.md5_digest() for p in parts] if per_part else None,
    )  # fmt: skip
