"""The AIMD controller and the pacer (pure: a fake clock, no S3)."""

from __future__ import annotations

import asyncio

import pytest

from prefect_s3_concurrency.errors import ThrottledError
from prefect_s3_concurrency.s3.pacing import (
    AIMD,
    INCREASE,
    Pacer,
    fixed_window,
    pause_before_retry,
    report_throttle,
)


@pytest.fixture(scope="session")
def prefect_harness() -> None:
    """No Prefect API for these tests."""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_window_halves_on_throttle_and_grows_by_half_a_request_per_window() -> None:
    aimd = AIMD(16, Clock())
    assert aimd.limit == 16 and aimd.interval() == 0
    assert aimd.throttle(aimd.started()) and aimd.limit == 8
    for _ in range(8):  # a whole window of successes adds about INCREASE (half a request)
        aimd.success()
    assert aimd.limit == 8 and 8.0 + INCREASE - 0.1 < aimd.window <= 8.0 + INCREASE
    for _ in range(1000):
        aimd.success()
    assert aimd.limit == 16  # never above the ceiling
    assert aimd.throttled == 1


def test_one_decrease_per_round() -> None:
    aimd = AIMD(16, Clock())
    rounds = [aimd.started() for _ in range(10)]  # ten requests in flight
    decreased = [aimd.throttle(r) for r in rounds]  # all of them answered SlowDown
    assert decreased == [True] + [False] * 9 and aimd.limit == 8
    assert aimd.throttled == 10
    assert aimd.throttle(aimd.started()) and aimd.limit == 4  # a request of the new round


def test_window_is_cut_from_the_requests_in_flight() -> None:
    """A batch of 8 objects under a ceiling of 64 (parts included) goes to 4 at once, not 32."""
    aimd = AIMD(64, Clock())
    assert aimd.throttle(aimd.started(), in_flight=8) and aimd.limit == 4


def test_below_one_in_flight_the_pace_becomes_a_rate_and_recovers() -> None:
    clock = Clock()
    aimd = AIMD(2, clock)
    for _ in range(200):  # 200 requests in the last second
        aimd.started()
        clock.now += 0.005
    aimd.throttle(aimd.started())
    assert aimd.limit == 1 and aimd.rate is None
    aimd.throttle(aimd.started())
    assert aimd.rate == pytest.approx(0.7 * 201, rel=0.02)  # of the achieved rate
    assert aimd.interval() == pytest.approx(1 / aimd.rate)
    aimd.throttle(aimd.started())
    assert aimd.rate == pytest.approx(0.49 * 201, rel=0.02)  # of the rate itself
    before = aimd.rate
    for _ in range(int(before)):  # a second's worth at the rate: a tenth of the cut rate
        aimd.success()
    assert aimd.rate == pytest.approx(before + 14.07, rel=0.05)
    clock.now += 10  # nothing started for a while: the rate no longer binds
    aimd.success()
    assert aimd.rate is None and aimd.limit == 1
    aimd.success()
    assert aimd.window > 1


def test_pacer_caps_in_flight_and_counts_throttles() -> None:
    pacer = Pacer(3)
    seen: list[int] = []

    async def one(n: int) -> None:
        async with pacer.slots(2 if n == 0 else 1):
            seen.append(pacer.in_flight)
            await asyncio.sleep(0)
            if n == 1:
                report_throttle()  # as botocore's hook does
            if n == 2:
                raise ThrottledError("slow down")  # as obstore does once its retries ran out

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(8)), return_exceptions=True)

    asyncio.run(main())
    assert max(seen) <= 3 and pacer.in_flight == 0
    assert pacer.throttled_count == 2


def test_a_retry_after_slowdown_waits_without_its_slot() -> None:
    """The obstore engine's retry (pause_before_retry) gives its slot back while it waits,
    then takes one again like a new request, of the new round."""
    pacer = Pacer(1)
    order: list[str] = []

    async def retried(first: asyncio.Event) -> None:
        async with pacer.slots():
            order.append("first try")
            first.set()
            await pause_before_retry(0.01)
            order.append(f"retry, {pacer.in_flight} in flight")

    async def other(first: asyncio.Event) -> None:
        await first.wait()  # waits for the only slot from then on
        async with pacer.slots():
            order.append("other")

    async def main() -> None:
        first = asyncio.Event()
        await asyncio.gather(retried(first), other(first))

    asyncio.run(main())
    assert order == ["first try", "other", "retry, 1 in flight"]
    assert pacer.in_flight == 0


def test_fixed_window_counts_slowdown_but_keeps_the_ceiling() -> None:
    """The baseline without back-off (tests/test_backoff.py)."""
    with fixed_window():
        pacer = Pacer(8)
    pacer.throttled()
    assert pacer.aimd.limit == 8 and pacer.throttled_count == 1
    assert Pacer(8).aimd.backs_off  # outside it: backs off


def test_slots_never_exceed_the_ceiling() -> None:
    pacer = Pacer(2)

    async def main() -> int:
        async with pacer.slots(8):  # a multipart upload asking for more than the batch has
            return pacer.in_flight

    assert asyncio.run(main()) == 2


def test_summaries_report_slowdowns() -> None:
    from prefect_s3_concurrency.flows.common import TransferSummary
    from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary
    from prefect_s3_concurrency.s3.records import BatchResult

    merged = BatchResult()
    for count in (2, 3):
        merged.merge(BatchResult(throttled=count))
    summary = TransferSummary(direction="download", source="s", destination="d")
    summary.throttled = merged.throttled
    rows = {r["item"]: r["value"] for r in summary.rows()}
    assert rows["SlowDown replies (backed off)"] == 5
    assert summary.model_dump(mode="json")["throttled"] == 5
    pipeline = PipelineSummary(source="s", destination="d", transform="t", throttled=4)
    assert {r["item"]: r["value"] for r in pipeline.rows()}["SlowDown replies (backed off)"] == 4


def test_obstore_retries_failed_requests_only_and_reports_slowdown(monkeypatch) -> None:
    """What object_store retried itself (its retries are off): 5xx, SlowDown (reported to
    the pacer), transport errors; never a 4xx or a reply it could not use."""
    from obstore.exceptions import GenericError

    from prefect_s3_concurrency.s3 import pacing
    from prefect_s3_concurrency.s3.engines.obstore_errors import obstore_error, retrying

    monkeypatch.setattr(pacing, "FIRST_BACKOFF_S", 0.0)
    failed = "Generic S3 error: Error performing GET http://h/b/k in 1ms - "
    slowdown = f"{failed}Server returned non-2xx status code: 503: <Code>SlowDown</Code>"
    cases = {
        f"{failed}Server returned non-2xx status code: 500 Internal Server Error": 3,
        slowdown: 3,
        f"{failed}HTTP error: error sending request": 3,
        f"{failed}Server returned non-2xx status code: 400 Bad Request": 1,
        "Generic S3 error: Received non-partial response when range requested": 1,
    }
    with fixed_window():  # counts SlowDown without pacing the retries (a rate of 1/s here)
        pacer = Pacer(4)
    for text, attempts in cases.items():
        calls = 0

        async def request(text: str = text) -> None:
            nonlocal calls
            calls += 1
            raise GenericError(text)

        async def main() -> None:
            async with pacer.slots():
                await retrying(request, 3, lambda e: obstore_error(e, "b", "http://h"))

        with pytest.raises((GenericError, ThrottledError)):
            asyncio.run(main())
        assert calls == attempts, text
    assert pacer.throttled_count == 3  # each SlowDown reply, the last one too
