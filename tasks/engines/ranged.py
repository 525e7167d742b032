"""Large downloads: parallel ranged GETs written at their offsets, verified as they land.

Each range is fetched by the engine's :meth:`~tasks.engines.base.Engine.get_into`, which
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
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable

from prefect_s3_concurrency.tasks.engines.base import Engine
from prefect_s3_concurrency.tasks.errors import IntegrityError
from prefect_s3_concurrency.tasks.integrity import CHUNK, is_md5_etag
from prefect_s3_concurrency.tasks.models import S3Object

Span = tuple[int, int]


class InOrderDigest:
    """MD5 of a file whose ranges are written in any order, hashed in order on a thread.

    :meth:`run` (on a worker thread) waits for each range in turn, reads it back with
    ``pread`` and hashes it; :meth:`done` marks a range written; :meth:`stop` ends a run
    whose download failed.
    """

    def __init__(self, fd: int, spans: list[Span]) -> None:
        self._fd, self._spans = fd, spans
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

    def run(self) -> str | None:
        """Hash every range in order; the hex MD5, or None if stopped first."""
        digest = hashlib.md5(usedforsecurity=False)
        for index, (start, end) in enumerate(self._spans):
            with self._cond:
                while index not in self._written and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return None
            while start < end:
                block = os.pread(self._fd, min(CHUNK, end - start), start)
                if not block:
                    raise IntegrityError("file shorter than written")
                digest.update(block)
                start += len(block)
        return digest.hexdigest()


def spans_of(size: int, part_size: int) -> list[Span]:
    """Cut ``size`` bytes into ``(start, end)`` ranges of ``part_size`` (end exclusive)."""
    return [(s, min(s + part_size, size)) for s in range(0, size, part_size)]


def _multipart_count(etag: str) -> int | None:
    head, sep, count = etag.rpartition("-")
    return int(count) if sep and count.isdigit() and len(head) == 32 else None


async def ranges_into(
    engine: Engine,
    bucket: str,
    obj: S3Object,
    fd: int,
    part_size: int,
    concurrency: int,
    check_file: Callable[[], Awaitable[None]],
) -> None:
    """Download ``obj`` into ``fd`` as parallel ranged GETs and verify it (see module).

    The first range goes alone: a server that ignores ``Range`` is found there
    (:class:`~tasks.engines.base.RangeNotSupported`) before anything else is asked.

    Args:
        engine: The batch's engine.
        bucket: Source bucket.
        obj: The listed object (size and ETag).
        fd: The open temp file, truncated to ``obj.size`` here.
        part_size: Bytes per ranged GET.
        concurrency: Ranged GETs in flight for this object.
        check_file: Coroutine function reading the file back against the ETag (other ETags).

    Raises:
        IntegrityError: If a range came back short or the checksum does not match.
        RangeNotSupported: If the server sent the whole object for the first range.
    """
    spans = spans_of(obj.size, part_size)
    os.ftruncate(fd, obj.size)
    per_part = _multipart_count(obj.etag) == len(spans)
    ordered = InOrderDigest(fd, spans) if is_md5_etag(obj.etag) else None
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

    hashing = asyncio.ensure_future(asyncio.to_thread(ordered.run)) if ordered else None
    try:
        digests = [await one(0)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i)) for i in range(1, len(spans))]
        digests += [t.result() for t in tasks]
    except BaseException:
        if ordered is not None and hashing is not None:  # its thread reads fd: end it first
            ordered.stop()
            await asyncio.wait([hashing])
            if not hashing.cancelled():
                hashing.exception()  # retrieved: the download's own error is the one raised
        raise
    if per_part:
        combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        if f"{combined}-{len(spans)}" != obj.etag:
            raise IntegrityError(f"checksum mismatch for {obj.key}")
    elif hashing is not None:
        if await hashing != obj.etag:
            raise IntegrityError(f"MD5 mismatch for {obj.key}")
    elif obj.etag:
        await check_file()
