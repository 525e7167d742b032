"""Large downloads: parallel ranged GETs written at their offsets, verified as they land.

Each range is fetched by the engine's :meth:`~s3.engines.base.Engine.get_into`, which
writes the bytes at their offsets and feeds a digest on a worker thread (MD5 releases the
GIL), so the parts of one object, and the objects of one batch, hash in parallel:

* a multipart ETag whose part count matches the ranges (``md5-of-part-md5s-N``): each range
  gets its own MD5, and the part digests combine into the ETag;
* a whole-object MD5 ETag (``rclone serve s3``, MinIO for single PUTs): one MD5 in object
  order, computed by :class:`InOrderDigest` on its own thread from the file while the later
  ranges are still arriving (the written prefix is still in the page cache);
* any other ETag (a part size we cannot guess): the finished file is read back once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable

from prefect_s3_concurrency.errors import IntegrityError
from prefect_s3_concurrency.s3.engines.base import Engine
from prefect_s3_concurrency.s3.integrity import CHUNK, is_md5_etag, multipart_part_count
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
    file_matches: Callable[[], Awaitable[bool | None]],
) -> None:
    """Download ``obj`` into ``fd`` as parallel ranged GETs and verify it (see module).

    The first range goes alone: a server that ignores ``Range`` is found there
    (:class:`~s3.engines.base.RangeNotSupported`) before anything else is asked.

    Args:
        engine: The batch's engine.
        bucket: Source bucket.
        obj: The listed object (size and ETag).
        fd: The open temp file, truncated to ``obj.size`` here.
        part_size: Bytes per ranged GET (a guess of the upload's part size).
        concurrency: Ranged GETs in flight for this object.
        file_matches: Reads the file back against the ETag (True, False, or None when no
            known part size reproduces a multipart ETag).

    Raises:
        IntegrityError: If a range came back short or the checksum does not match.
        RangeNotSupported: If the server sent the whole object for the first range.
    """
    spans = spans_of(obj.size, part_size)
    os.ftruncate(fd, obj.size)
    per_part = multipart_part_count(obj.etag) == len(spans)
    ordered = InOrderDigest(fd, spans) if is_md5_etag(obj.etag) else None
    hashing = ordered.start() if ordered else None
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int) -> bytes:
        digest = hashlib.md5(usedforsecurity=False) if per_part else None
        async with gate:
            got = await engine.get_into(bucket, obj.key, obj.etag or None, spans[index], fd, digest)
        if got != spans[index][1] - spans[index][0]:
            raise IntegrityError(f"short range of {obj.key}: got {got} bytes")
        if ordered is not None:
            ordered.done(index)
        return digest.digest() if digest is not None else b""

    try:
        digests = [await one(0)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(i)) for i in range(1, len(spans))]
        except BaseExceptionGroup as failed:  # the first error, as download_one expects it
            raise failed.exceptions[0] from None
        digests += [t.result() for t in tasks]
        md5 = await hashing if hashing is not None else None
    finally:
        if ordered is not None:
            ordered.stop()  # a no-op once it finished; it reads through its own fd anyway
    if per_part:
        combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        # a wrong guess of the part size cuts other parts: then the whole file must match
        if f"{combined}-{len(spans)}" != obj.etag and await file_matches() is not True:
            raise IntegrityError(f"checksum mismatch for {obj.key}")
    elif ordered is not None:
        if md5 != obj.etag:
            raise IntegrityError(f"MD5 mismatch for {obj.key}")
    elif obj.etag and await file_matches() is False:
        raise IntegrityError(f"checksum mismatch for {obj.key}")
