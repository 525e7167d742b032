"""Scale: a 10k-object download with a bounded batch count (``make test``), and 100k objects
with flat memory (``make test-slow``).

Objects are seeded by writing files straight into the directory ``rclone serve s3`` serves,
before it starts (its directory cache would hide a bucket made while it runs).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from prefect_s3_concurrency.s3.local_server import LocalS3Server

HERE = Path(__file__).resolve().parents[1]  # tests/, where scale_run.py is
FIGURES: dict[int, dict[str, float]] = {}


def _seed(root: Path, bucket: str, count: int, size: int = 1024) -> None:
    body = b"x" * size
    for i in range(count):
        sub = root / bucket / "p" / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"o{i:06d}").write_bytes(body)


def _run(tmp_path: Path, count: int) -> dict[str, float]:
    root = tmp_path / f"s3-{count}"
    _seed(root, "scale", count)
    with LocalS3Server(root=root) as server:
        env = {
            **os.environ, **server.env(),
            "PREFECT_API_URL": str(get_current_settings().api.url),
        }  # fmt: skip
        script = [sys.executable, str(HERE / "scale_run.py")]
        done = subprocess.run(
            [*script, "s3://scale/p", str(tmp_path / f"out-{count}")],
            env=env, capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    FIGURES[count] = figures
    print(f"\nscale {count}: {figures}")
    assert figures["objects"] == count and figures["failed"] == 0
    out = tmp_path / f"out-{count}"
    assert sum(1 for _ in out.rglob("o*")) == count
    # one task run per batch of >= 64 objects (plus the two housekeeping tasks), never per object
    assert figures["task_runs"] <= math.ceil(count / 64) + 2
    return figures


def test_10k_objects_in_batches(tmp_path: Path) -> None:
    _run(tmp_path, 10_000)


@pytest.mark.slow
def test_100k_objects_with_flat_memory(tmp_path: Path) -> None:
    small = FIGURES.get(10_000) or _run(tmp_path, 10_000)
    large = _run(tmp_path, 100_000)
    assert large["peak_rss_mib"] <= 1.3 * small["peak_rss_mib"], (small, large)
