"""End-to-end demo on an embedded S3 server: no AWS account, no Prefect server needed.

Starts ``rclone serve s3`` on 127.0.0.1, creates sample data, uploads it with the
``upload-directory`` flow, downloads it back with ``download-prefix``, verifies every byte
and prints the summaries. Run with ``make demo`` or ``python flows/demo.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the demo

import argparse
import filecmp
import random
import sys
import tempfile
from pathlib import Path

from flows.transfer import download_prefix, upload_directory
from tasks.client import S3Connection
from tasks.local_s3 import LocalS3Server
from tasks.transfer import list_local_files


def make_sample_files(root: Path, count: int, seed: int = 7) -> int:
    """Write ``count`` files of varied sizes (incl. empty, nested, unicode names); return bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        sub = root / f"part-{i % 5}" / ("ünïcødé dir" if i % 7 == 0 else "plain")
        sub.mkdir(parents=True, exist_ok=True)
        size = 0 if i % 50 == 0 else rng.randint(1, 64 * 1024)
        (sub / f"file {i:04d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return total


def verify_same_tree(a: Path, b: Path) -> int:
    """Assert two directory trees hold byte-identical files; return the number compared."""
    left = {rel: p for rel, p, _ in list_local_files(a)}
    right = {rel: p for rel, p, _ in list_local_files(b)}
    if left.keys() != right.keys():
        raise SystemExit(f"demo failed: file sets differ: {sorted(left.keys() ^ right.keys())[:5]}")
    for rel, path in left.items():
        if not filecmp.cmp(path, right[rel], shallow=False):
            raise SystemExit(f"demo failed: {rel} differs after the round trip")
    return len(left)


def print_summary(title: str, summary: object) -> None:
    """Print a flow summary as an aligned table."""
    print(f"\n== {title}")
    for row in summary.rows():  # type: ignore[attr-defined]
        print(f"  {row['item']:>32}: {row['value']}")


def run_transfer_demo(server: LocalS3Server, work: Path, files: int, workers: int) -> None:
    """Upload a generated tree, download it back and verify it byte for byte."""
    conn = S3Connection(endpoint_url=server.endpoint_url, region=server.region)
    server.create_bucket("demo")
    src = work / "source"
    total = make_sample_files(src, files)
    print(f"created {files} sample files ({total / 2**20:.1f} MiB) in {src}")
    up = upload_directory(str(src), "s3://demo/raw", workers=workers, connection=conn)
    print_summary("upload-directory", up)
    down = download_prefix("s3://demo/raw", str(work / "copy"), workers=workers, connection=conn)
    print_summary("download-prefix", down)
    print(f"\nverified {verify_same_tree(src, work / 'copy')} files byte for byte")


def main(argv: list[str] | None = None) -> None:
    """Run the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="sample files to create")
    parser.add_argument("--workers", type=int, default=8, help="I/O threads")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s3-demo-") as tmp, LocalS3Server(
        root=Path(tmp) / "s3"
    ) as server:
        os.environ.update(server.env())
        run_transfer_demo(server, Path(tmp), args.files, args.workers)
    print("\ndemo OK")


if __name__ == "__main__":
    sys.exit(main())
