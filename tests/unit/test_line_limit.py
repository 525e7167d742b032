"""Memory stays bounded on a giant line; messages are
escaped once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefect_s3_concurrency.transforms.square import BadLineError, transform_file

MIB = 2**20
# Runs in a fresh interpreter, so ru_maxrss (the peak) reflects this one call only.
_MEASURE = """
import json, resource, sys
from prefect_s3_concurrency.transforms.square import BadLineError, transform_file
transform_file(sys.argv[3], sys.argv[2] + ".warm")  # imports and buffers, before measuring
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    transform_file(sys.argv[1], sys.argv[2])
    outcome = "completed"
except BadLineError as exc:
    outcome = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_mib": (after - before) / 1024, "outcome": outcome}))
"""


@pytest.fixture
def prefect_harness() -> None:
    """This module never touches Prefect."""


def _write_line(path: Path, block: bytes, total: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(total // len(block)):
            fh.write(block)


@pytest.mark.parametrize("kind", ["digits", "binary"])
def test_giant_line_is_refused_with_bounded_memory(tmp_path: Path, kind: str) -> None:
    """50 MB with no newline: one clear per-object error, and the peak RSS grows by far
    less than the line (it grew by 238 MiB for digits, 145 MiB for binary, before)."""
    src = tmp_path / "giant.txt"
    block = b"1234567890" * 10_000 if kind == "digits" else bytes(range(11, 256)) * 400
    _write_line(src, block, 50 * 10**6)
    small = tmp_path / "small.txt"
    small.write_bytes(b"1\n2\n")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(src), str(tmp_path / "out.txt"), str(small)],
        capture_output=True, text=True, timeout=240, check=True,
    )  # fmt: skip
    figures = json.loads(out.stdout)
    assert "line 1: line longer than max_line_bytes=16777216 (16 MiB)" in figures["outcome"]
    assert figures["growth_mib"] < 40, figures  # the 16 MiB cap plus buffers
    assert not (tmp_path / "out.txt").exists()


def test_line_at_the_limit_passes_and_one_byte_more_fails(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"12345678\n-1234567\n")  # 8 content bytes + newline each
    out = tmp_path / "out.txt"
    assert transform_file(src, out, max_line_bytes=9).numbers == 2
    src.write_bytes(b"1\n123456789\n")
    with pytest.raises(BadLineError, match="line 2: line longer than max_line_bytes=9"):
        transform_file(src, out, max_line_bytes=9)


def test_bad_line_snippet_escaped_once(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"1\nab\xff\x1b[31m\\x\n")
    with pytest.raises(BadLineError) as info:
        transform_file(src, tmp_path / "out.txt", key="k\x1b[2J\nx")
    assert str(info.value) == "k\\x1b[2J\\nx: line 2: not an integer: 'ab\\xff\\x1b[31m\\x'"
