"""square-objects resume: re-runs skip inputs whose output is current; stale scratch is removed.

Runs square in the flow process (small workloads), so each run costs about a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import prefect_s3_concurrency.s3.transfer as transfer
from prefect_s3_concurrency.flows.pipeline import SCRATCH_PREFIX, square_objects
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
from prefect_s3_concurrency.local.tempfiles import (
    SCRATCH_MARKER,
    locked_scratch_dir,
    remove_stale_scratch,
)
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.transforms.resume import metadata_matches, output_metadata

REPO = Path(__file__).resolve().parents[2]


def _square(body: bytes, power: int = 2) -> bytes:
    return b"".join(b"%d\n" % (int(line) ** power) for line in body.splitlines())


def _outputs(client, bucket: str, prefix: str) -> dict[str, dict]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=item["Key"])
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rel = item["Key"][len(prefix) + 1 :]
            out[rel] = {"body": body, "modified": head["LastModified"], "meta": head["Metadata"]}
    return out


class Calls:
    """Records the keys every download and upload in this process touches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.downloaded: list[str] = []
        self.uploaded: list[str] = []
        down, up = transfer.download_one, transfer.upload_one

        async def download(engine, bucket, obj, *args, **kwargs):
            self.downloaded.append(obj.key.rsplit("/", 1)[-1])
            return await down(engine, bucket, obj, *args, **kwargs)

        async def upload(engine, bucket, item, *args, **kwargs):
            self.uploaded.append(item.key.rsplit("/", 1)[-1])
            return await up(engine, bucket, item, *args, **kwargs)

        monkeypatch.setattr(transfer, "download_one", download)
        monkeypatch.setattr(transfer, "upload_one", upload)

    def take(self) -> tuple[list[str], list[str]]:
        """Return (downloaded, uploaded) names since the last call, sorted, and reset."""
        got = sorted(self.downloaded), sorted(self.uploaded)
        self.downloaded.clear()
        self.uploaded.clear()
        return got


def _runner(**params) -> Callable[..., PipelineSummary]:
    def run(expect_failure: bool = False, **extra) -> PipelineSummary:
        state = square_objects(return_state=True, min_process_mib=1024, **params, **extra)
        if expect_failure:
            assert state.is_failed(), state
            exc = state.result(raise_on_failure=False)
            assert isinstance(exc, PipelineFailed), exc
            return exc.summary
        assert state.is_completed(), state
        return state.result()

    return run


def test_rerun_after_failure_processes_only_what_is_missing_or_changed(
    moto_server, bucket_factory, tmp_path, monkeypatch
) -> None:
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    inputs = {f"{i}.txt": f"{i}\n-{i * 7}\n{10**30 + i}\n".encode() for i in range(6)}
    inputs["bad.txt"] = b"1\nnot a number\n"
    for key, body in inputs.items():
        client.put_object(Bucket=src, Key=f"in/{key}", Body=body)
    # An output made by an older version (no metadata) is recomputed once, then resumed.
    client.put_object(Bucket=dst, Key="out/0.txt", Body=_square(inputs["0.txt"]))
    scratch = tmp_path / "scratch"
    dead = scratch / f"{SCRATCH_PREFIX}dead"  # a killed run's: marker written, lock gone
    dead.mkdir(parents=True)
    (dead / SCRATCH_MARKER).write_text("12345\n")
    (dead / "in").mkdir()
    (dead / "in" / "0000001").write_bytes(b"half a download")
    calls = Calls(monkeypatch)
    run = _runner(
        source=f"s3://{src}/in", dest=f"s3://{dst}/out", workers=4, scratch_dir=str(scratch),
        connection=S3Connection(endpoint_url=moto_server.endpoint_url),
    )  # fmt: skip
    n = len(inputs)

    with locked_scratch_dir(SCRATCH_PREFIX, scratch) as live:  # a live run's: kept
        first = run(expect_failure=True)
        assert live.is_dir() and not dead.exists()
    assert first.stale_scratch_removed == 1 and list(scratch.iterdir()) == []
    assert list(first.failed) == ["in/bad.txt"]
    assert (first.processed, first.uploaded, first.resumed) == (n - 1, n - 1, 0)
    downloaded, uploaded = calls.take()
    assert downloaded == sorted(inputs) and uploaded == sorted(set(inputs) - {"bad.txt"})
    before = _outputs(client, dst, "out")
    assert before["1.txt"]["body"] == _square(inputs["1.txt"])
    meta = {k.lower(): v for k, v in before["0.txt"]["meta"].items()}
    assert meta == output_metadata(client.head_object(Bucket=src, Key="in/0.txt")["ETag"]
                                   .strip('"'), "square")  # fmt: skip

    # Fix the bad object: only it is downloaded, squared and uploaded.
    inputs["bad.txt"] = b"1\n-2\n"
    client.put_object(Bucket=src, Key="in/bad.txt", Body=inputs["bad.txt"])
    second = run()
    assert (second.skipped, second.resumed, second.processed) == (n - 1, n - 1, 1)
    assert (second.objects, second.uploaded, second.failed) == (n, 1, {})
    assert calls.take() == (["bad.txt"], ["bad.txt"])
    after = _outputs(client, dst, "out")
    assert after["bad.txt"]["body"] == b"1\n4\n"
    assert all(after[k]["modified"] == v["modified"] for k, v in before.items())
    assert any(row["item"] == "skipped: resumed / identical" and row["value"] == f"{n - 1} / 0"
               for row in second.rows())  # fmt: skip

    # A changed input is recomputed; the others are not touched.
    inputs["3.txt"] = b"11\n"
    client.put_object(Bucket=src, Key="in/3.txt", Body=inputs["3.txt"])
    third = run()
    assert (third.resumed, third.processed, third.uploaded) == (n - 1, 1, 1)
    assert calls.take() == (["3.txt"], ["3.txt"])

    # recompute=True squares everything again but re-uploads nothing identical.
    forced = run(recompute=True)
    assert (forced.resumed, forced.processed, forced.uploaded, forced.skipped) == (0, n, 0, n)
    assert calls.take() == (sorted(inputs), [])

    # Another transform recomputes every object.
    cubed = run(transform="cube")
    assert (cubed.resumed, cubed.processed, cubed.uploaded) == (0, n, n)
    final = _outputs(client, dst, "out")
    assert {k: v["body"] for k, v in final.items()} == {k: _square(v, 3) for k, v in inputs.items()}


def test_rclone_capitalised_metadata_still_resumes(
    rclone_s3, bucket_factory, tmp_path, monkeypatch
) -> None:
    for name, value in rclone_s3.env().items():
        monkeypatch.setenv(name, value)
    client = rclone_s3.client()
    src, dst = bucket_factory(rclone_s3, "in"), bucket_factory(rclone_s3, "out")
    inputs = {f"k{i}.txt": f"{i}\n-{i}3\n".encode() for i in range(4)}
    for key, body in inputs.items():
        client.put_object(Bucket=src, Key=f"in/{key}", Body=body)
    run = _runner(
        source=f"s3://{src}/in", dest=f"s3://{dst}/out", workers=4, scratch_dir=str(tmp_path),
        connection=S3Connection(endpoint_url=rclone_s3.endpoint_url, region=rclone_s3.region),
    )  # fmt: skip
    assert run().processed == 4
    assert "Source-Etag" in client.head_object(Bucket=dst, Key="out/k0.txt")["Metadata"]
    again = run()
    assert (again.resumed, again.processed, again.uploaded, again.objects) == (4, 0, 0, 4)


def test_metadata_match_is_case_insensitive_and_needs_an_etag() -> None:
    expected = output_metadata("abc-2", "pkg.mod:fn")
    assert metadata_matches({"Source-Etag": "abc-2", "Transform": "pkg.mod:fn"}, expected)
    assert not metadata_matches({"source-etag": "abc-2", "transform": "square"}, expected)
    assert not metadata_matches({"source-etag": "abd-2", "transform": "pkg.mod:fn"}, expected)
    assert not metadata_matches({}, expected)
    assert not metadata_matches({"source-etag": "", "transform": "square"},
                                output_metadata("", "square"))  # fmt: skip


HOLD_SCRATCH = """
import sys
from pathlib import Path
from prefect_s3_concurrency.local.tempfiles import locked_scratch_dir
with locked_scratch_dir("square-objects-", Path(sys.argv[1])) as path:
    print(path, flush=True)
    sys.stdin.read()
"""


def test_stale_scratch_only_removes_dead_runs_own_dirs(tmp_path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / SCRATCH_MARKER).write_text("1\n")  # looks stale, but only reachable by symlink
    (root / f"{SCRATCH_PREFIX}link").symlink_to(outside, target_is_directory=True)
    (root / f"{SCRATCH_PREFIX}foreign").mkdir()  # no marker: not made by this project
    (root / f"{SCRATCH_PREFIX}file").write_text("x")
    (root / "other-dir").mkdir()
    (root / "other-dir" / SCRATCH_MARKER).write_text("1\n")  # wrong prefix
    (root / f"{SCRATCH_PREFIX}newborn").mkdir()  # marker created, not yet locked nor written
    (root / f"{SCRATCH_PREFIX}newborn" / SCRATCH_MARKER).touch()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRATCH, str(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        held = Path(proc.stdout.readline().strip())
        (held / "in").mkdir()
        assert remove_stale_scratch(root, SCRATCH_PREFIX) == []  # a live process holds it
        assert held.is_dir()
    finally:
        proc.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        proc.wait()
    assert held.is_dir()
    assert remove_stale_scratch(root, SCRATCH_PREFIX) == [held.name]
    assert not held.exists() and (outside / SCRATCH_MARKER).exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [f"{SCRATCH_PREFIX}{s}" for s in ("link", "foreign", "file", "newborn")] + ["other-dir"]
    )
