"""Batches cut from a stream, a bounded number in flight, named task runs and progress."""

from __future__ import annotations

import re
import time

import pytest
from prefect import flow
from prefect.artifacts import Artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_s3_concurrency import download_prefix, square_objects, upload_directory
from prefect_s3_concurrency.flows.batching import (
    Batch,
    BatchCutter,
    RunProgress,
    batch_name,
    cut_batches,
    ordinal,
    run_batches,
    spread,
)
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.records import BatchResult

CHUNK_RE = re.compile(
    r"^(download|square|upload) chunk \d+/\d+( part \d+/\d+)?: \d+ objects?, \d+\.\d MiB$"
)
NAME_RE = re.compile(r"^(download|upload) \d+(/\d+)?: \d+ objects?, \d+\.\d MiB$")


def test_cutter_streams_full_batches_and_spreads_the_rest() -> None:
    cutter = BatchCutter[int](lambda _: 1, max_objects=100, max_bytes=10**9, workers=4)
    seen: list[list[int]] = []
    items = list(range(1050))
    for start in range(0, len(items), 300):  # pages of 300, as a listing would arrive
        seen += list(cutter.add(items[start : start + 300]))
        assert all(len(b) == 100 for b in seen), "only full batches while the stream lasts"
        assert len(seen) * 100 <= start + 300  # nothing is cut before it arrived
    seen += list(cutter.finish())
    assert [i for b in seen for i in b] == items  # every item once, in order
    assert min(map(len, seen)) >= 64


@pytest.mark.parametrize(
    ("count", "nbytes", "workers", "expected"),
    [(20, 20, 16, 1), (1000, 1000, 16, 15), (10**6, 10**6, 16, 16), (4, 4 * 2**30, 16, 16)],
)
def test_spread_keeps_batches_at_least_64_objects_or_64_mib(count, nbytes, workers, expected):
    assert spread(count, nbytes, workers) == expected


def test_cut_batches_uses_every_item_once() -> None:
    batches = cut_batches(list(range(500)), lambda _: 1, 100, 10**9, 16)
    assert [i for b in batches for i in b] == list(range(500)) and len(batches) == 7


def test_batch_name() -> None:
    six = int(6.4 * 2**20)
    assert batch_name("download 3/16", 100, six) == "download 3/16: 100 objects, 6.4 MiB"
    assert batch_name("upload 1", 1, 0) == "upload 1: 1 object, 0.0 MiB"
    assert ordinal(3, 16) == "3/16" and ordinal(3, None) == "3"


def test_progress_never_goes_down_and_ends_at_100() -> None:
    progress = RunProgress("unused", "outside a flow run: counts only")
    progress.add_total(10)
    progress.advance(5)
    assert progress.percent == 50.0
    progress.add_total(90)  # the listing grew
    progress.advance(1)
    assert progress.percent == 50.0
    progress.finish(success=True)
    assert progress.percent == 100.0
    failed = RunProgress("unused", "a failed run")
    failed.add_total(2)
    failed.advance(2)
    failed.finish(success=False)
    assert failed.percent < 100.0  # a failed run's progress never says 100


class _LazyFuture:
    """Completes only when waited on, so the pump alone decides how many are in flight."""

    def __init__(self, log: list[str], n: int) -> None:
        self.log, self.n = log, n
        self.state = self

    def wait(self) -> None:
        self.log.append("done")

    def is_completed(self) -> bool:
        return True

    def result(self) -> BatchResult:
        return BatchResult(transferred=[str(self.n)])


class _Runner:
    def __init__(self) -> None:
        self.log: list[str] = []

    def submit(self, task_obj, params):
        self.log.append("submit")
        return _LazyFuture(self.log, params["n"])


class _Task:
    def with_options(self, **_):
        return self


def test_in_flight_batches_are_bounded() -> None:
    runner = _Runner()

    @flow
    def pump() -> BatchResult:
        batches = (Batch({"n": n}, [str(n)], 0) for n in range(40))
        return run_batches(runner, _Task(), "download", batches, RunProgress("p", "p"), 3)

    result = pump()
    assert sorted(result.transferred, key=int) == [str(n) for n in range(40)]
    in_flight = most = 0
    for event in runner.log:
        in_flight += 1 if event == "submit" else -1
        most = max(most, in_flight)
    assert most == 3 and in_flight == 0


def _task_run_names(flow_run_id) -> list[str]:
    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
            )
        return [r.name for r in runs]

    return run_coro_as_sync(read())


@pytest.mark.integration
def test_runs_name_their_batches_and_reach_100(
    rclone_s3, rclone_block, bucket_factory, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(150):
        (src / f"f{i:03d}.txt").write_bytes(b"x" * i)
    conn = S3Connection(credentials_block=rclone_block)
    up = upload_directory(str(src), f"s3://{bucket}/p", connection=conn, return_state=True)
    down = download_prefix(f"s3://{bucket}/p", str(tmp_path / "out"), connection=conn,
                           return_state=True)  # fmt: skip
    for state, key, verb in (
        (up, "upload-progress", "upload"),
        (down, "download-progress", "download"),
    ):
        assert state.result().objects == 150
        names = [n for n in _task_run_names(state.state_details.flow_run_id) if n.startswith(verb)]
        assert names and all(NAME_RE.match(n) for n in names), names
        assert sum(int(n.split(": ")[1].split()[0]) for n in names) == 150
        artifact = Artifact.get(key)
        assert artifact is not None and float(artifact.data) == 100.0


def _task_runs(flow_run_id) -> list:
    """The flow run's task runs once the API has a final state for each: task-run states
    reach the API as events, which the server records after the flow run has returned."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)

    async def read() -> list:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
            )

    deadline = time.monotonic() + 30
    while True:
        runs = run_coro_as_sync(read())
        recorded = all(r.state is not None and r.state.is_final() for r in runs)
        if recorded or time.monotonic() > deadline:
            return runs
        time.sleep(0.2)  # poll the API until the server has recorded every state


@pytest.mark.integration
def test_pipeline_shows_the_failed_chunk_and_never_says_100(
    rclone_s3, rclone_block, bucket_factory
) -> None:
    src, dst = bucket_factory(rclone_s3), bucket_factory(rclone_s3)
    client = rclone_s3.client()
    for i in range(8):
        client.put_object(Bucket=src, Key=f"in/n{i}.txt", Body=f"{i}\n{i + 1}\n".encode())
    client.put_object(Bucket=src, Key="in/bad.txt", Body=b"1\nnot a number\n")
    state = square_objects(
        f"s3://{src}/in", f"s3://{dst}/out",
        connection=S3Connection(credentials_block=rclone_block),
        min_chunk_mib=0.00001, return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    summary = state.result(raise_on_failure=False).summary
    assert list(summary.failed) == ["in/bad.txt"] and summary.uploaded == 8
    runs = _task_runs(state.state_details.flow_run_id)
    squares = [r for r in runs if r.name.startswith("square chunk ")]
    assert squares and all(CHUNK_RE.match(r.name) for r in squares), [r.name for r in squares]
    failed = [r.name for r in squares if r.state.is_failed()]
    assert len(failed) == 1 and len(squares) > 1
    transfers = [r.name for r in runs if r.name.startswith(("download chunk", "upload chunk"))]
    assert transfers and all(CHUNK_RE.match(n) for n in transfers), transfers
    assert len(transfers) == len(set(transfers))  # unique names
    artifact = Artifact.get("square-objects-progress")
    assert artifact is not None and float(artifact.data) < 100.0  # the run failed
