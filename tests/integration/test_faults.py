"""The flows under injected faults: FaultProxy in front of rclone serve s3.

Every check reads the result back *directly* from rclone (or the local tree), never
through the proxy: 0 lost, 0 duplicated (no extra keys or files), 0 corrupted (SHA-256).
The figures of each run (faults injected per kind, botocore retries, in-process body
retries, Prefect task retries, objects verified and skipped) are printed at the end of
the module (``pytest -s``) and written to ``fault-figures.json`` in pytest's temp dir.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FAULT_KINDS, FaultProxy
from prefect.artifacts import Artifact
from prefect.settings import PREFECT_API_URL
from prefect_processes import REPO, ManagedProcess, base_env, wait_for
from reliability_helpers import (
    bucket_digests,
    digests_of,
    flow_logs,
    partials,
    task_retries,
    tree_digests,
)

from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix, upload_directory
from prefect_s3_concurrency.local.paths import is_partial_name
from prefect_s3_concurrency.s3.connection import S3Connection

TRANSFER_LOGGER = "prefect_s3_concurrency.s3.transfer"
MIB = 2**20
FIGURES: dict[str, dict[str, Any]] = {}


def _files(count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {f"d{i % 7}/obj {i:03d} +%#?&ü.bin": rng.randbytes(rng.randint(0, 48 * 1024))
             for i in range(count)}  # fmt: skip
    files["empty.bin"] = b""
    return files


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


@pytest.fixture(scope="module")
def block(rclone_block: str) -> Iterator[str]:
    """The rclone credentials block; writes the fault figures when the module is done."""
    yield rclone_block
    out = Path(os.environ.get("PYTEST_FAULT_FIGURES", tempfile.gettempdir())) / "fault-figures.json"
    out.write_text(json.dumps(FIGURES, indent=2))
    print("\nFAULT FIGURES " + json.dumps(FIGURES, indent=2))


@pytest.fixture
def proxy(rclone_s3) -> Iterator[FaultProxy]:
    with FaultProxy(rclone_s3.endpoint_url, seed=6) as p:
        yield p


class Counters:
    """botocore request retries and our body re-fetches, counted from their log records."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        # handler: last level set
        for name in (TRANSFER_LOGGER, "botocore.retries.standard"):
            caplog.set_level(logging.DEBUG, logger=name)

    def take(self) -> dict[str, int]:
        msgs = [(r.name, r.getMessage()) for r in self.caplog.records]
        self.caplog.clear()
        return {
            "botocore_retries": sum(m.startswith("Retry needed") for _, m in msgs),
            "body_refetches": sum(
                n == TRANSFER_LOGGER and "retrying" in m for n, m in msgs
            ),
        }


def _record(name: str, proxy: FaultProxy, counters: Counters, run: Any, state: Any) -> None:
    stats = proxy.stats
    FIGURES[name] = {
        "requests": stats["requests"],
        "injected": {k: stats[k] for k in ("injected", *FAULT_KINDS, "corrupt") if stats[k]},
        **counters.take(),
        "prefect_task_retries": task_retries(state.state_details.flow_run_id),
        "objects_verified": getattr(run, "objects", None),
        "skipped": getattr(run, "skipped", None),
    }
    proxy.reset_stats()


def _run(flow: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """Run a flow; return (its result or exception, its final state)."""
    state = flow(*args, return_state=True, **kwargs)
    return state.result(raise_on_failure=False), state


def test_ten_percent_faults_upload_and_download(
    rclone_s3, block, proxy, bucket_factory, tmp_path, caplog
) -> None:
    bucket = bucket_factory(rclone_s3)
    files = {**_files(150, seed=1), "big/multipart.bin": random.Random(2).randbytes(17 * MIB)}
    src = _write(tmp_path / "src", files)
    counters = Counters(caplog)
    proxy.fault_rate, proxy.kinds = 0.10, FAULT_KINDS
    conn = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url)
    up, state = _run(upload_directory, str(src), f"s3://{bucket}/data", workers=8,
                     connection=conn)  # fmt: skip
    assert state.is_completed(), up
    _record("upload_10pct", proxy, counters, up, state)
    assert bucket_digests(rclone_s3.client(), bucket, "data/") == digests_of(files)

    adaptive = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url,
                            retry_mode="adaptive")  # fmt: skip
    down, state = _run(download_prefix, f"s3://{bucket}/data", str(tmp_path / "out"),
                       workers=8, connection=adaptive)  # fmt: skip
    assert state.is_completed(), down
    _record("download_10pct", proxy, counters, down, state)
    assert tree_digests(tmp_path / "out") == digests_of(files)  # no temp files either
    assert down.objects == up.objects == len(files)
    injected = FIGURES["upload_10pct"]["injected"], FIGURES["download_10pct"]["injected"]
    assert all(i["injected"] >= 5 for i in injected), injected
    assert set(FAULT_KINDS) <= set(injected[0]) | set(injected[1]), injected  # every kind hit


def test_corrupted_bodies_are_refetched(rclone_s3, block, proxy, bucket_factory, tmp_path, caplog):
    bucket = bucket_factory(rclone_s3)
    files = _files(40, seed=3)
    client = rclone_s3.client()
    for key, body in files.items():
        client.put_object(Bucket=bucket, Key=f"c/{key}", Body=body)
    counters = Counters(caplog)
    proxy.kinds, proxy.fault_rate = ("corrupt",), 0.25
    proxy.key_filter = lambda target: "/" in target  # object GETs, not listings
    conn = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url)
    down, state = _run(download_prefix, f"s3://{bucket}/c", str(tmp_path), connection=conn)
    assert state.is_completed(), down
    _record("download_25pct_corrupt", proxy, counters, down, state)
    assert FIGURES["download_25pct_corrupt"]["injected"]["corrupt"] >= 3
    assert tree_digests(tmp_path) == digests_of(files)


@pytest.mark.parametrize("direction", ["download", "upload"])
def test_key_that_always_fails_then_rerun_sends_only_it(
    direction, rclone_s3, block, proxy, bucket_factory, tmp_path, caplog
) -> None:
    bucket = bucket_factory(rclone_s3)
    files = _files(30, seed=4)
    bad = sorted(files)[7]
    counters = Counters(caplog)
    if direction == "download":
        for key, body in files.items():
            rclone_s3.client().put_object(Bucket=bucket, Key=f"k/{key}", Body=body)
        flow, args = download_prefix, (f"s3://{bucket}/k", str(tmp_path / "out"))
    else:
        flow, args = upload_directory, (str(_write(tmp_path / "src", files)), f"s3://{bucket}/k")
    proxy.fault_rate, proxy.always_fail_keys = 0.05, {f"{bucket}/k/{bad}"}
    conn = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url, max_attempts=2)
    exc, state = _run(flow, *args, task_retries=1, connection=conn)
    assert state.is_failed() and isinstance(exc, TransferFailed)
    _record(f"{direction}_always_failing_key", proxy, counters, exc.summary, state)
    assert list(exc.summary.failed) == [f"k/{bad}"] and f"k/{bad}" in str(exc)
    assert exc.summary.objects == len(files) - 1
    assert any(f"failed key 'k/{bad}'" in m for m in flow_logs(state.state_details.flow_run_id))
    rows = json.loads(Artifact.get(f"{direction}-summary").data)
    assert {"item": f"failed: k/{bad}", "value": exc.summary.failed[f"k/{bad}"]} in rows
    if direction == "download":
        assert not (tmp_path / "out" / bad).exists() and partials(tmp_path / "out") == []

    proxy.always_fail_keys = set()
    again, state = _run(flow, *args, task_retries=1, connection=conn)
    assert state.is_completed(), again
    _record(f"{direction}_rerun_after_fault_removed", proxy, counters, again, state)
    assert (again.objects, again.skipped) == (1, len(files) - 1)
    got = (
        tree_digests(tmp_path / "out")
        if direction == "download"
        else bucket_digests(rclone_s3.client(), bucket, "k/")
    )
    assert got == digests_of(files)


def test_kill_mid_download_then_rerun_converges(
    rclone_s3, block, proxy, bucket_factory, tmp_path, caplog
) -> None:
    bucket = bucket_factory(rclone_s3)
    files = _files(80, seed=5)
    for key, body in files.items():
        rclone_s3.client().put_object(Bucket=bucket, Key=f"kill/{key}", Body=body)
    dest = tmp_path / "dest"
    proxy.latency_s, proxy.fault_rate = 0.1, 0.05
    env = base_env({**rclone_s3.env(), "PREFECT_API_URL": PREFECT_API_URL.value(),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})  # fmt: skip
    cmd = [sys.executable, str(REPO / "flows/transfer.py"), "cp",
           f"s3://{bucket}/kill", str(dest), "--endpoint-url", proxy.endpoint_url,
           "--workers", "2", "--batch-max-objects", "5"]  # fmt: skip
    proc = ManagedProcess(cmd, env, tmp_path / "flow.log")
    try:

        def twenty_done() -> bool:
            proc.assert_alive()
            return dest.is_dir() and len(list(dest.rglob("*.bin"))) >= 20  # temp names differ

        wait_for(twenty_done, 120, "20 files downloaded", interval=0.02)
        os.killpg(proc.proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.stop()
    before = tree_digests(dest)
    left = partials(dest)
    complete = {k: v for k, v in before.items() if not is_partial_name(Path(k).name)}
    assert 20 <= len(complete) < len(files), "the kill did not land mid-run"
    assert all(digests_of(files)[k] == v for k, v in complete.items())  # atomic: no torn file

    counters = Counters(caplog)
    proxy.latency_s = 0.0
    proxy.reset_stats()  # count the re-run only
    conn = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url)
    again, state = _run(download_prefix, f"s3://{bucket}/kill", str(dest), connection=conn)
    assert state.is_completed(), again
    _record("download_rerun_after_kill", proxy, counters, again, state)
    FIGURES["download_rerun_after_kill"]["partials_left_by_kill"] = len(left)
    assert (again.skipped, again.objects) == (len(complete), len(files) - len(complete))
    assert again.stale_removed == len(left)
    assert tree_digests(dest) == digests_of(files)


def test_ten_percent_faults_pipeline(rclone_s3, block, proxy, bucket_factory, caplog) -> None:
    from prefect_s3_concurrency.flows.pipeline import square_objects

    bucket = bucket_factory(rclone_s3)
    rng = random.Random(7)
    lines = [[str(rng.randint(-(10**40), 10**40)) for _ in range(rng.randint(0, 300))]
             for _ in range(60)]  # fmt: skip
    inputs = {f"n/{i:03d}.txt": "\n".join(nums).encode() for i, nums in enumerate(lines)}
    for key, body in inputs.items():
        rclone_s3.client().put_object(Bucket=bucket, Key=f"in/{key}", Body=body)
    counters = Counters(caplog)
    proxy.fault_rate, proxy.kinds = 0.10, FAULT_KINDS
    conn = S3Connection(credentials_block=block, endpoint_url=proxy.endpoint_url)
    run, state = _run(square_objects, f"s3://{bucket}/in", f"s3://{bucket}/out", workers=8,
                      connection=conn)  # fmt: skip
    assert state.is_completed(), run
    _record("pipeline_10pct", proxy, counters, run, state)
    expected = {
        k: b"".join(b"%d\n" % (int(x) ** 2) for x in v.splitlines()) for k, v in inputs.items()
    }
    assert bucket_digests(rclone_s3.client(), bucket, "out/") == digests_of(expected)
    assert FIGURES["pipeline_10pct"]["injected"]["injected"] >= 4
