"""The CPU-stage benchmark's data set: integer files, chunks of jobs, seeding, digests."""

from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path
from typing import Any

MIB = 2**20
Jobs = list[tuple[str, str, str]]


def write_numbers(path: Path, nbytes: int, seed: int, digits: int = 20) -> None:
    """Write ~``nbytes`` of random signed ``digits``-digit integers, one per line."""
    rng = random.Random(seed)
    lo, hi = 10 ** (digits - 1), 10**digits - 1
    count = max(1, nbytes // (digits + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(str(rng.choice((-1, 1)) * rng.randint(lo, hi)) for _ in range(count)))


def make_files(root: Path, count: int, file_mib: float, seed: int = 3) -> list[Path]:
    """Write ``count`` input files: copies of four bases, one with 1,000-digit integers."""
    bases = []
    for i in range(min(4, count)):
        base = root / f".base-{i}.txt"
        write_numbers(base, int(file_mib * MIB), seed + i, 1000 if i == 3 else 20)
        bases.append(base)
    files = [root / f"nums-{n:04d}.txt" for n in range(count)]
    for n, path in enumerate(files):
        shutil.copyfile(bases[n % len(bases)], path)
    for base in bases:
        base.unlink()
    return files


def chunk_jobs(files: list[Path], out_dir: Path, chunks: int) -> list[Jobs]:
    """Deal files round-robin into ``chunks`` chunks of ``(key, src, dst)`` jobs."""
    groups: list[Jobs] = [[] for _ in range(min(chunks, len(files)))]
    for n, path in enumerate(files):
        groups[n % len(groups)].append((path.name, str(path), str(out_dir / path.name)))
    return groups


def _digest_dir(path: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def _seed_bucket(root: Path, bucket: str, total_mib: float, object_mib: float) -> int:
    """Write input objects as files under the S3 server's root (before it starts)."""
    count = max(1, round(total_mib / object_mib))
    make_files(root / bucket / "in", count, object_mib, seed=17)
    return count


def _object_digests(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) :]] = item["ETag"].strip('"')
    return out
