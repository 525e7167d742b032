"""A request budget (a Prefect global concurrency limit) shared by concurrent runs.

Against the session's Prefect test server and rclone behind a counting proxy: batches of
two runs naming one limit of K slots never have more than K requests in flight together;
without the limit they have more. A run killed with SIGKILL gives its slots back when its
lease runs out: the API's shortest lease is 60 s, so that test waits ~70 s, polling the API
every few seconds (idle meanwhile, it stays in the default suite).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prefect_aws import AwsCredentials
from prefect_processes import wait_for
from s3proxy import Counting, Faults, Reply, Request, S3Proxy

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.runtime.budget import LEASE_SECONDS, RequestBudget, resolve_budget
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.transfer import S3Object, list_objects
from prefect_s3_concurrency.tasks.s3 import download_batch

K = 4  # slots of the shared limit
PER_BATCH = 2  # requests in flight per batch (so slots per batch)
BATCHES = 2  # batch tasks of each run at once
OBJECTS = 24  # per batch
POLL_S = 2.0  # while a lease runs out: a few API calls, not hundreds


class UntilReply(Counting):
    """Counting, with a request in flight until its reply starts: Counting keeps it until
    the reply was sent, by which time the client may have read it, freed its slot and sent
    the next request (counted twice for an instant). This interval lies inside the
    client's own (sent to reply read), so the client's bound holds for it."""

    def on_response(self, req: Request, reply: Reply) -> None:
        super().on_response(req, reply)
        self.on_done(req)


def _client(server: Any = None) -> Any:
    from prefect.client.orchestration import get_client

    return server.client() if server is not None else get_client(sync_client=True)


def _limit(limit: int, server: Any = None) -> str:
    name = f"s3-test-{uuid.uuid4().hex[:8]}"
    with _client(server) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)
    return name


def _active(name: str, server: Any = None) -> int:
    with _client(server) as client:
        return int(client.read_global_concurrency_limit_by_name(name).active_slots)


def _run(conn: S3Connection, bucket: str, batches: list[list[S3Object]], out: Path,
         budget: RequestBudget | None) -> list[Any]:  # fmt: skip
    """One run: its batches at once, each as the flow's batch task runs it."""

    def one(batch: list[S3Object]) -> Any:
        items = [(o, str(out / o.key)) for o in batch]
        out.mkdir(parents=True, exist_ok=True)
        return download_batch.fn(
            conn, 8, bucket, items, requests_in_flight=PER_BATCH, root=str(out),
            request_budget=budget,
        )  # fmt: skip

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(one, batches))


def _two_runs(rclone_s3: Any, bucket: str, tmp_path: Path, name: str | None) -> int:
    """Two concurrent runs through a counting proxy; the most requests in flight at once."""
    objs = list_objects(rclone_s3.client(), bucket, "")
    cut = [objs[i::2 * BATCHES] for i in range(2 * BATCHES)]
    counting = UntilReply()
    keys = AwsCredentials(
        aws_access_key_id=rclone_s3.access_key, aws_secret_access_key=rclone_s3.secret_key
    )
    with S3Proxy(rclone_s3.endpoint_url, [counting, Faults(latency_s=0.03)]) as proxy:
        conn = S3Connection(endpoint_url=proxy.endpoint_url).with_credentials(keys)
        budget = resolve_budget(name, PER_BATCH)
        with ThreadPoolExecutor(2) as runs:
            done = [runs.submit(_run, conn, bucket, cut[r::2], tmp_path / f"run{r}", budget)
                    for r in range(2)]  # fmt: skip
            results = [result for run in done for result in run.result()]
    for run in range(2):
        for batch in cut[run::2]:
            for obj in batch:
                assert (tmp_path / f"run{run}" / obj.key).read_bytes() == obj.key.encode()
    assert sum(len(r.transferred) for r in results) == len(objs)  # both runs exact
    return counting["max_in_flight"]


def test_two_runs_share_one_limit(rclone_s3, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    for i in range(OBJECTS * 2 * BATCHES):
        client.put_object(Bucket=bucket, Key=f"k{i:04d}", Body=f"k{i:04d}".encode())
    name = _limit(K)
    limited = _two_runs(rclone_s3, bucket, tmp_path / "limited", name)
    unlimited = _two_runs(rclone_s3, bucket, tmp_path / "free", None)
    print(f"most requests in flight: {limited} with a limit of {K}, {unlimited} without")
    assert 1 <= limited <= K < unlimited
    assert _active(name) == 0  # every slot given back


def test_budget_must_exist_and_slots_fit_it() -> None:
    with pytest.raises(ConfigurationError, match="prefect gcl create"):
        resolve_budget(f"s3-missing-{uuid.uuid4().hex[:6]}", 4)
    name = _limit(3)
    assert resolve_budget(name, 16) == RequestBudget(name, 3, 3)  # never more than the limit
    assert resolve_budget(None, 16) is None


def test_killed_run_gives_its_slots_back(prefect_server) -> None:
    """On a real ``prefect server start`` (its repossessor revokes expired leases)."""
    name = _limit(K, prefect_server)
    script = (
        "import time; from prefect_s3_concurrency.runtime.budget import RequestBudget, held\n"
        f"with held(RequestBudget({name!r}, 3, {K})):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    env = {**os.environ, **prefect_server.env()}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert _active(name, prefect_server) == 3
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        wait_for(lambda: _active(name, prefect_server) == 0, LEASE_SECONDS + 45, "slots back",
                 interval=POLL_S)  # fmt: skip
        print(f"slots back {time.monotonic() - killed:.0f}s after SIGKILL")
    finally:
        child.kill()
