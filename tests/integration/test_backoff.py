"""Back-off on SlowDown against a proxy that throttles above R requests a second.

Both engines: botocore reports each SlowDown from its retries, the obstore engine from its
own (object_store retries nothing itself). With back-off, the second half of a run sees few
SlowDown replies; the same run with a fixed number in flight (``fixed_window``) sees many.
The ratios come from the proxy's own records of its replies. ~4-7 s a run.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from prefect_aws import AwsCredentials
from s3proxy import Reply, Request, Rule, S3Proxy, Throttle

from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import open_engine
from prefect_s3_concurrency.s3.pacing import fixed_window
from prefect_s3_concurrency.s3.transfer import BatchResult, download_objects, list_objects

RATE = 50  # requests a second the proxy serves; it answers SlowDown above that
OBJECTS = 200
ATTEMPTS = 3  # attempts per request
IN_FLIGHT = 32  # objects in flight (a fixed 8 with botocore's own retry delays of up to 2 s
# between attempts often stays below R: no baseline to compare with)
BULK = 0.9  # the run's measured part: until this share of its successful replies


@pytest.fixture(scope="session")
def prefect_harness() -> None:
    """No Prefect API for these tests (they run no flow)."""


@pytest.fixture(scope="module")
def bucket(rclone_s3: Any) -> str:
    """A bucket of OBJECTS small objects (written around the proxy)."""
    name = f"backoff-{uuid.uuid4().hex[:12]}"
    client = rclone_s3.client()
    client.create_bucket(Bucket=name)
    for i in range(OBJECTS):
        client.put_object(Bucket=name, Key=f"k{i:04d}", Body=b"%d" % i)
    return name


class Replies(Rule):
    """Records when each reply went out and its status."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def on_response(self, req: Request, reply: Reply) -> None:
        with self._lock:
            self.seen.append((time.monotonic(), reply.status))

    def second_half(self) -> tuple[float, float, float]:
        """SlowDown share, successes a second and replies a second over the run's second half.

        The run ends with the reply that completes :data:`BULK` of its successes: the last
        few objects then trickle in, each after its own retries' back-off, whatever the
        pacer does (on a loaded machine a straggler can double the run's length).
        """
        ok = [t for t, status in self.seen if status != 503]
        start, end = self.seen[0][0], ok[max(0, int(BULK * len(ok)) - 1)]
        late = [status for t, status in self.seen if (start + end) / 2 <= t <= end]
        slow = sum(status == 503 for status in late)
        half = max(1e-9, (end - start) / 2)
        return slow / max(1, len(late)), (len(late) - slow) / half, len(late) / half


def _download(server: Any, bucket: str, out: Path, engine: str,
              back_off: bool = True) -> tuple[Replies, BatchResult]:  # fmt: skip
    replies = Replies()
    keys = AwsCredentials(
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key
    )
    objs = list_objects(server.client(), bucket, "")  # not throttled
    out.mkdir()
    items = [(o, str(out / o.key)) for o in objs]
    with S3Proxy(server.endpoint_url, [replies, Throttle(RATE)]) as proxy:
        conn = S3Connection(endpoint_url=proxy.endpoint_url, max_attempts=ATTEMPTS)
        eng = open_engine(conn.with_credentials(keys), engine, requests_in_flight=IN_FLIGHT)
        try:
            with nullcontext() if back_off else fixed_window():
                result = download_objects(eng, bucket, items, root=str(out), in_flight=IN_FLIGHT)
        finally:
            eng.close()
    share, rate, offered = replies.second_half()
    print(f"{engine} back_off={back_off}: SlowDown {share:.1%} of the second half's replies, "
          f"{rate:.1f} successes/s of {offered:.1f} replies/s; "
          f"{len(result.transferred)} transferred, {len(result.failed)} failed")  # fmt: skip
    return replies, result


@pytest.mark.parametrize("engine", ["obstore", "boto3"])
def test_slowdown_backs_off(rclone_s3, bucket, tmp_path, engine) -> None:
    """In the second half of the run SlowDown is <= 10% of the replies (obstore, the
    default engine) and successes >= 0.7 R, every object arrives, and the result counts the
    SlowDown replies. boto3 is held to 15%: botocore retries a SlowDown inside the request on
    its own delays, which the pacer cannot space out (3.9-8.3% measured, 10.8% once in a
    clean-clone run at load ~4); without back-off it is 40-47%."""
    replies, result = _download(rclone_s3, bucket, tmp_path / "on", engine)
    share, rate, offered = replies.second_half()
    assert (len(result.transferred), result.failed) == (OBJECTS, {})
    assert result.throttled >= 1  # counted for the summary
    # On 2 loaded cores the client itself may not reach R requests a second: then the
    # successes are held to 0.7 of what it did send.
    bound = 0.10 if engine == "obstore" else 0.15
    assert share <= bound and rate >= 0.7 * min(RATE, offered), (share, rate, offered)


@pytest.mark.parametrize("engine", ["obstore", "boto3"])
def test_without_back_off_slowdown_stays_high(rclone_s3, bucket, tmp_path, engine) -> None:
    """The same run with a fixed number in flight: SlowDown is > 30% of the second half's
    replies (so the test above can fail)."""
    replies, result = _download(rclone_s3, bucket, tmp_path / "off", engine, back_off=False)
    share, _, _ = replies.second_half()
    assert result.throttled >= 1
    assert share > 0.30, share
