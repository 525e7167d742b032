"""The in-process progress hook (runtime.progress) and the transfer loop reporting into it."""

from __future__ import annotations

import threading
from pathlib import Path

from reliability_helpers import plan_downloads

from prefect_s3_concurrency.runtime import progress
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.transfer import download_objects


class Counter:
    """A thread-safe listener that sums what it is told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected = [0, 0]
        self.done = [0, 0]

    def expect(self, objects: int, nbytes: int) -> None:
        with self.lock:
            self.expected[0] += objects
            self.expected[1] += nbytes

    def advance(self, objects: int, nbytes: int) -> None:
        with self.lock:
            self.done[0] += objects
            self.done[1] += nbytes


def test_reports_from_many_threads_are_all_counted() -> None:
    counter = Counter()

    def work() -> None:
        for _ in range(2000):
            progress.report(1, 3)

    with progress.listening(counter):
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert counter.done == [16000, 48000]


def test_no_listener_after_the_block_and_a_broken_listener_is_harmless() -> None:
    counter = Counter()

    class Broken:
        def expect(self, objects: int, nbytes: int) -> None:
            raise RuntimeError("display gone")

        advance = expect

    with progress.listening(counter), progress.listening(Broken()):
        progress.report(2, 10)
        progress.expect(5, 50)
    progress.report(1, 1)  # nobody listens: a no-op
    assert counter.done == [2, 10] and counter.expected == [5, 50]
    assert progress._listeners == ()


def test_transfer_loop_reports_done_and_skipped_but_not_failed(tmp_path: Path, monkeypatch) -> None:
    objects = [S3Object("p/a", 4), S3Object("p/b", 6), S3Object("p/c", 8)]
    (tmp_path / "a").write_bytes(b"xxxx")  # same size, no ETag: not provably identical
    counter = Counter()
    with progress.listening(counter):
        items, rejected = plan_downloads(objects, "p/", tmp_path)
        result = download_objects(None, "bkt", items, dry_run=True)
    assert rejected == {} and counter.expected == [3, 18]
    assert result.transferred == ["p/a", "p/b", "p/c"] and counter.done == [3, 18]

    async def fail_b(engine: object, bucket: str, obj: S3Object, *args: object) -> None:
        if obj.key == "p/b":
            raise OSError("boom")

    monkeypatch.setattr("prefect_s3_concurrency.s3.transfer.download_one", fail_b)
    counter = Counter()
    with progress.listening(counter):
        result = download_objects(None, "bkt", items, skip_existing=False)
    assert list(result.failed) == ["p/b"] and counter.done == [2, 12]
