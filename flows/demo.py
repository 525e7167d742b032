"""End-to-end demo on an embedded S3 server: no AWS account, no Prefect set-up needed.

Without ``PREFECT_API_URL`` the flows report to the local Prefect server that ``prefect-s3``
uses too (started on first use, ~15 s the first time while it creates its database; reused
afterwards; its UI keeps the runs).

Starts ``rclone serve s3`` on 127.0.0.1, creates sample data, uploads it with the
``upload-directory`` flow, downloads it back with ``download-prefix``, verifies every byte
and prints the summaries. Then it seeds a few hundred objects of integers (some with
thousands of digits), runs the ``square-objects`` pipeline on them (squaring in worker
processes), checks every output line against Python's own ``x * x`` and prints the summary.
Run with ``make demo`` or ``python flows/demo.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry from the demo

import argparse
import contextlib
import filecmp
import random
import tempfile
from pathlib import Path
from typing import Any

from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.local.files import list_local_files
from prefect_s3_concurrency.runtime.prefect_server import local_prefect_server, read_state
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.local_server import LocalS3Server
from prefect_s3_concurrency.transforms.square import unlimited_int_digits


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


def make_number_objects(count: int, seed: int = 11) -> dict[str, list[int]]:
    """Return ``count`` objects of integers: mostly ~20 digits, every 25th with 1,000+ digits.

    Keys are ``batch-N/numbers-XXXX.txt``; one object in 50 is empty.
    """
    rng = random.Random(seed)
    objects: dict[str, list[int]] = {}
    for i in range(count):
        if i % 50 == 7:
            nums: list[int] = []
        elif i % 25 == 3:
            bits = [rng.randint(3_400, 10_000) for _ in range(40)]  # 1,024 to 3,011 digits
            nums = [rng.choice((-1, 1)) * (rng.getrandbits(b) | 1 << (b - 1)) for b in bits]
        else:
            nums = [rng.randint(-(10**20), 10**20) for _ in range(rng.randint(2_000, 8_000))]
            nums[0] = 0
        objects[f"batch-{i % 4}/numbers-{i:04d}.txt"] = nums
    return objects


def encode_numbers(nums: list[int], crlf: bool) -> bytes:
    """Render integers one per line (CRLF or LF, no final newline for CRLF ones)."""
    sep = "\r\n" if crlf else "\n"
    text = sep.join(map(str, nums))
    return (text if crlf else text + "\n" if nums else "").encode()


def verify_squares(client: Any, bucket: str, prefix: str, objects: dict[str, list[int]]) -> int:
    """Check every output line against Python's ``x * x``; return the number of lines checked."""
    checked = 0
    with unlimited_int_digits():  # squares of 3,000-digit numbers exceed str()'s default limit
        for key, nums in objects.items():
            got = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
            want = [b"%d" % (n * n) for n in nums]
            lines = got.split(b"\n")
            if lines.pop() != b"" or lines != want:
                bad = next((i for i, w in enumerate(want) if i >= len(lines) or lines[i] != w), 0)
                raise SystemExit(f"demo failed: {prefix}/{key} line {bad + 1} is not the square")
            checked += len(nums)
    return checked


def run_pipeline_demo(
    server: LocalS3Server, objects: int, workers: int, cpu_workers: int, min_process_mib: float
) -> None:
    """Seed integer objects, square them with ``square-objects`` and verify every line."""
    conn = S3Connection(endpoint_url=server.endpoint_url, region=server.region)
    client = server.client()
    data = make_number_objects(objects)
    size = 0
    for i, (key, nums) in enumerate(data.items()):
        body = encode_numbers(nums, crlf=i % 10 == 1)
        client.put_object(Bucket="demo", Key=f"numbers/{key}", Body=body)
        size += len(body)
    digits = max((len(str(abs(n))) for nums in data.values() for n in nums), default=0)
    print(
        f"\nseeded {len(data)} objects of integers ({size / 2**20:.1f} MiB, up to {digits} digits)"
    )
    summary = square_objects(
        "s3://demo/numbers", "s3://demo/squared", workers=workers, cpu_workers=cpu_workers,
        min_process_mib=min_process_mib, min_chunk_mib=4, connection=conn,
    )  # fmt: skip
    print_summary("square-objects", summary)
    print(f"\nverified {verify_squares(client, 'demo', 'squared', data)} squares against x * x")


def _prefect_api() -> contextlib.AbstractContextManager[object]:
    """The configured Prefect API, else the local server (started here if needed)."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return contextlib.nullcontext()
    print("starting or finding the local Prefect server the flows report to...", flush=True)
    return local_prefect_server()


def main(argv: list[str] | None = None) -> None:
    """Run the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="sample files to create")
    parser.add_argument("--workers", type=int, default=8, help="I/O threads")
    parser.add_argument("--objects", type=int, default=300, help="integer objects to square")
    parser.add_argument("--cpu-workers", type=int, default=2, help="squaring processes")
    parser.add_argument(
        "--min-process-mib", type=float, default=8.0,
        help="below this input size, square in the flow process (the flow's default is 128)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    with (
        _prefect_api(),
        tempfile.TemporaryDirectory(prefix="s3-demo-") as tmp,
        LocalS3Server(root=Path(tmp) / "s3") as server,
    ):
        os.environ.update(server.env())
        run_transfer_demo(server, Path(tmp), args.files, args.workers)
        run_pipeline_demo(
            server, args.objects, args.workers, args.cpu_workers, args.min_process_mib
        )
    print("\ndemo OK")
    prefect = read_state()
    if prefect is not None and not os.environ.get("PREFECT_API_URL"):
        print(f"the runs are in the local Prefect UI: {prefect.ui_url}")


if __name__ == "__main__":
    main()
