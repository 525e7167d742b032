"""How the benchmark's source objects get into S3: the ways users' data gets there.

* ``direct``: files written into ``rclone serve s3``'s directory before it starts (whole-object
  MD5 ETags; the old data set, rclone only).
* ``boto3``: ``upload_file`` with the default ``TransferConfig`` (multipart above 8 MiB, 8 MiB
  parts, as aws-cli), no checksum sent (``request_checksum_calculation="when_required"``).
* ``boto3-crc64``: the same with ``ChecksumAlgorithm="CRC64NVME"``: a full-object CRC64NVME
  that a server keeping checksums (moto, S3) stores; rclone drops it.
* ``s5cmd``: ``s5cmd cp`` (multipart, its default 50 MiB parts).
* ``project``: this project's ``upload-directory`` flow (needs the Prefect API running).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SEED_STYLES = ("direct", "boto3", "boto3-crc64", "s5cmd", "project")
BUCKET, PREFIX = "bench", "src/"
MIB = 2**20


def write_local(local_dir: Path, count: int, size: int, seed: int = 1) -> dict[str, Any]:
    """Write ``count`` random files of ``size`` bytes; return ``name -> (size, md5)``."""
    local_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    expected: dict[str, Any] = {}
    for i in range(count):
        name = f"obj-{i:06d}.bin"
        # randbytes(n) overflows past 2**28 bytes (it asks getrandbits for 8n bits at once)
        data = b"".join(rng.randbytes(min(MIB, size - o)) for o in range(0, size, MIB))
        (local_dir / name).write_bytes(data)
        expected[name] = (size, hashlib.md5(data, usedforsecurity=False).hexdigest())
    return expected


def place_direct(local_dir: Path, s3_root: Path) -> None:
    """Copy the files into rclone's served directory (call before the server starts)."""
    remote = s3_root / BUCKET / PREFIX
    remote.mkdir(parents=True, exist_ok=True)
    for path in local_dir.iterdir():
        shutil.copyfile(path, remote / path.name)


def seed(style: str, server: Any, endpoint_url: str, conn: Any, local_dir: Path) -> None:
    """Upload ``local_dir`` to ``s3://bench/src/`` the way ``style`` says (not ``direct``)."""
    from benchmarks.transfer_tools import project_upload, s5cmd_cp

    if style == "s5cmd":
        s5cmd_cp(endpoint_url, f"{local_dir}/*", f"s3://{BUCKET}/{PREFIX}")
    elif style == "project":
        project_upload(conn, local_dir, BUCKET, PREFIX, 16)
    elif style in ("boto3", "boto3-crc64"):
        crc = style == "boto3-crc64"
        client = server.client(request_checksum_calculation="when_supported" if crc else
                               "when_required")  # fmt: skip
        extra = {"ChecksumAlgorithm": "CRC64NVME"} if crc else None

        def put(path: Path) -> None:
            client.upload_file(str(path), BUCKET, PREFIX + path.name, ExtraArgs=extra)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, sorted(local_dir.iterdir())))
    else:
        raise ValueError(f"unknown seeding style {style!r}; choose from {SEED_STYLES}")


def describe(client: Any) -> dict[str, Any]:
    """What the server stored for the first seeded object: ETag and any checksum headers."""
    first = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX, MaxKeys=1).get("Contents", [])
    if not first:
        return {}
    head = client.head_object(Bucket=BUCKET, Key=first[0]["Key"], ChecksumMode="ENABLED")
    out = {"key": first[0]["Key"], "etag": head.get("ETag", "")}
    out.update({k: v for k, v in head.items() if k.startswith("Checksum")})
    return out
