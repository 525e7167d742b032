"""Back off on SlowDown: an AIMD controller of a batch's S3 requests (both engines).

S3 answers ``503 SlowDown`` when a prefix gets more requests a second than it serves. A
batch then lowers its own pace and raises it again slowly (additive increase,
multiplicative decrease, as TCP does):

* The window (requests in flight) starts at the batch's ceiling. A SlowDown halves it, from
  the requests actually in flight when fewer (at most once per round: replies to requests
  sent before the last decrease do not count again); every success adds
  ``INCREASE/window``, so a whole window of successes adds half a request (half TCP's
  pace: a server that refuses above a rate answers fewer SlowDowns the slower the window
  climbs back, at the same throughput).
* At one request in flight S3 may still be asked too often (a fast server answers in
  milliseconds), so below that the pace is a rate: a SlowDown then sets it to
  ``RATE_DECREASE`` times the rate of the last second (or of the rate itself, once set),
  and it grows back by ``RATE_STEP`` of the rate it was cut from each second (additive:
  about three seconds back to where S3 refused). Once the rate is twice what the batch
  achieves, it binds no more and is dropped: the window grows again.

SlowDown replies are seen where they happen: botocore's own retries report each one
(:func:`report_throttle`, from the client's ``needs-retry`` hook), and so do the obstore
engine's (object_store retries nothing itself: see :mod:`s3.engines.obstore_errors`).
:class:`Pacer` is the batch's gate; the pure :class:`AIMD` holds the arithmetic.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from prefect_s3_concurrency.errors import ThrottledError

DECREASE = 0.5  # the window's factor on a SlowDown
INCREASE = 0.5  # requests the window grows by, per window of successes
RATE_DECREASE = 0.7  # the rate's (a sawtooth between 0.7 and 1 of what S3 serves)
RATE_STEP = 0.1  # the rate grows by this share of the rate it was cut from, a second
RATE_WINDOW_S = 1.0  # the achieved rate is measured over this many seconds
MIN_RATE = 1.0  # requests a second: never slower than this
FIRST_BACKOFF_S = 0.1  # a request's retries wait this long, doubled each time, jittered
MAX_BACKOFF_S = 15.0


def backoff_delay(attempt: int) -> float:
    """Seconds before retrying a request that failed ``attempt`` times: exponential, at most
    :data:`MAX_BACKOFF_S`, jittered by +/- 50% (so retries of many requests spread out)."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (attempt - 1)) * (0.5 + random.random())


@dataclass
class AIMD:
    """The window (requests in flight) and rate (requests a second, None: unpaced)."""

    ceiling: int
    clock: Callable[[], float] = time.monotonic
    window: float = 0.0
    rate: float | None = None
    throttled: int = 0
    round: int = 0  # bumped by every decrease; a request remembers the round it started in
    step: float = 1.0  # requests a second the rate grows by, each second
    backs_off: bool = True  # False: SlowDown is only counted (the window stays the ceiling)

    def __post_init__(self) -> None:
        self.ceiling = max(1, self.ceiling)
        self.window = float(self.ceiling)
        self._starts: collections.deque[float] = collections.deque()

    @property
    def limit(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self.window))

    def interval(self) -> float:
        """Seconds between request starts (0: unpaced)."""
        return 1.0 / self.rate if self.rate else 0.0

    def started(self) -> int:
        """Note a request start; return its round."""
        self._starts.append(self.clock())
        self.achieved()  # drops the starts older than the window (amortised O(1))
        return self.round

    def achieved(self) -> float:
        """Requests started a second, over the last :data:`RATE_WINDOW_S`."""
        since = self.clock() - RATE_WINDOW_S
        while self._starts and self._starts[0] < since:
            self._starts.popleft()
        return len(self._starts) / RATE_WINDOW_S

    def success(self) -> None:
        """Additive increase: the rate by :attr:`step` a second per second, else the window
        by one per window of successes."""
        if self.rate is not None:
            self.rate += self.step / self.rate
            if self.rate > 2 * max(self.achieved(), MIN_RATE):
                self.rate = None  # binds no more: the window takes over
            return
        self.window = min(float(self.ceiling), self.window + INCREASE / self.window)

    def throttle(self, started_round: int | None = None, in_flight: int | None = None) -> bool:
        """Multiplicative decrease, once per round; return whether it decreased.

        Args:
            started_round: The round the throttled request started in (None: current).
            in_flight: Requests in flight now: the window is cut from these when fewer (as
                TCP cuts from its flight size), not from a window the batch never filled.
        """
        self.throttled += 1
        if not self.backs_off:
            return False
        if started_round is not None and started_round != self.round:
            return False  # sent before the last decrease: already answered for
        self.round += 1
        if in_flight is not None:
            self.window = min(self.window, max(1.0, float(in_flight)))
        if self.window > 1:
            self.window = max(1.0, self.window * DECREASE)
        else:
            base = self.rate if self.rate is not None else self.achieved()
            self.rate = max(MIN_RATE, base * RATE_DECREASE)
            self.step = max(MIN_RATE, base * RATE_STEP)
        return True


@dataclass
class _Request:
    """A request the pacer let through: its slots, its round, whether a SlowDown was reported."""

    pacer: Pacer
    count: int
    round: int = 0
    reported: bool = False
    holding: bool = False  # its slots are taken (not while it waits to be retried)


# The request this code runs for (set by the pacer; botocore's hook reads it on the worker
# thread, which runs in a copy of the caller's context).
_current: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "s3_request", default=None
)


async def pause_before_retry(delay: float) -> None:
    """Wait ``delay`` seconds before the running request is sent again.

    Under a pacer the request's slots are given back meanwhile and taken again when its
    window and rate let a new request start, so a retry is paced like any request.
    """
    request = _current.get()
    if request is None:
        await asyncio.sleep(delay)
    else:
        await request.pacer.again(request, delay)


def report_throttle() -> None:
    """Tell the running request's pacer that S3 asked to slow down (no-op outside one)."""
    request = _current.get()
    if request is not None:
        request.reported = True
        request.pacer.throttled(request.round)


# Whether the pacers made in this context back off (see fixed_window).
_backs_off: contextvars.ContextVar[bool] = contextvars.ContextVar("s3_backs_off", default=True)


@contextlib.contextmanager
def fixed_window() -> Iterator[None]:
    """Pacers made inside (batches started inside, on this thread) keep their ceiling of
    requests in flight on SlowDown and only count it: the baseline back-off is measured
    against (each request's own retries still wait, as botocore's and ours always do)."""
    token = _backs_off.set(False)
    try:
        yield
    finally:
        _backs_off.reset(token)


class Pacer:
    """One batch's gate: at most ``AIMD.limit`` requests in flight, spaced by its rate.

    Thread-safe for :meth:`throttled` (botocore's threads report there); the rest runs on
    the batch's event loop.
    """

    def __init__(self, ceiling: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.aimd = AIMD(ceiling, clock, backs_off=_backs_off.get())
        self.in_flight = 0
        self._changed: asyncio.Condition | None = None
        self._next_start = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def throttled_count(self) -> int:
        """SlowDown replies seen so far."""
        return self.aimd.throttled

    def throttled(self, started_round: int | None = None) -> None:
        """A SlowDown reply (from any thread)."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _on_loop(loop):
            loop.call_soon_threadsafe(self.throttled, started_round)
        else:
            self.aimd.throttle(started_round, self.in_flight)

    @contextlib.asynccontextmanager
    async def slots(self, count: int = 1) -> AsyncIterator[None]:
        """Hold ``count`` request slots (at most the ceiling) while the body runs.

        Reports success on a normal exit, and a :class:`ThrottledError` not reported yet.
        """
        count = min(max(1, count), self.aimd.ceiling)
        self._loop = asyncio.get_running_loop()
        request = _Request(self, count)
        token = _current.set(request)
        ok = False
        try:
            await self._take(request)
            yield
            ok = True
        except ThrottledError:  # retries ran out (each SlowDown was reported, if seen)
            if not request.reported:
                self.throttled(request.round)
            raise
        finally:
            _current.reset(token)
            if ok:
                self.aimd.success()
            await self._give_back(request)

    async def again(self, request: _Request, delay: float) -> None:
        """Give ``request``'s slots back for ``delay`` seconds, then take them again.

        (A request shared by tasks, whose slots another of them gave back, just waits.)
        """
        if not request.holding:
            await asyncio.sleep(delay)
            return
        await self._give_back(request)
        await asyncio.sleep(delay)
        await self._take(request)

    async def _take(self, request: _Request) -> None:
        """Wait for room in the window (a request may always run alone), then the rate."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        count = request.count
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight + count <= self.aimd.limit
                                         or self.in_flight == 0 or request.holding)  # fmt: skip
            if request.holding:
                return  # taken again meanwhile by a task sharing it
            self.in_flight += count
            request.holding = True
        await self._pace()
        request.round = self.aimd.started()

    async def _give_back(self, request: _Request) -> None:
        if not request.holding or self._changed is None:
            return
        async with self._changed:
            self.in_flight -= request.count
            request.holding = False
            self._changed.notify_all()

    async def _pace(self) -> None:
        """Wait until the rate lets the next request start."""
        interval = self.aimd.interval()
        if not interval:
            return
        now = time.monotonic()
        start = max(now, self._next_start)
        self._next_start = start + interval
        if start > now:
            await asyncio.sleep(start - now)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
