"""Transfer flows on rclone serve s3: delete_extra, empty sources, full disk, bad workers."""

from __future__ import annotations

import errno
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import partials, task_retries

from prefect_s3_concurrency.cli import main
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix, upload_directory
from prefect_s3_concurrency.s3.connection import S3Connection


@pytest.fixture(scope="module")
def conn(rclone_block: str) -> S3Connection:
    return S3Connection(credentials_block=rclone_block)


def _put(client, bucket: str, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_download_delete_extra(rclone_s3, conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    _put(rclone_s3.client(), bucket, {"p/a.txt": b"a", "p/d/b.txt": b"b", "p/c.log": b"c"})
    dest = tmp_path / "dest"
    _write(dest, {"old.txt": "x", "d/old2.txt": "y", "keep.log": "z", "a.txt": "stale"})
    outside = tmp_path / "outside.txt"
    outside.write_text("never touched")
    src = f"s3://{bucket}/p"
    args = dict(exclude=["*.log"], delete_extra=True, connection=conn)
    dry = download_prefix(src, str(dest), dry_run=True, **args)
    assert sorted(dry.deleted) == ["d/old2.txt", "old.txt"] and (dest / "old.txt").exists()
    assert (dest / "a.txt").read_text() == "stale"
    real = download_prefix(src, str(dest), **args)
    assert sorted(real.deleted) == ["d/old2.txt", "old.txt"] and real.objects == 2
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "a.txt", "d/b.txt", "keep.log",
    ]  # fmt: skip
    assert (dest / "a.txt").read_text() == "a" and outside.read_text() == "never touched"
    # An empty source never wipes the destination, even with delete_extra.
    empty = download_prefix(f"s3://{bucket}/nothing-here", str(dest), delete_extra=True,
                            connection=conn)  # fmt: skip
    assert empty.deleted == [] and (dest / "a.txt").exists()


def test_upload_delete_extra(rclone_s3, conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    others = {"p/old.txt": b"o", "p/sub/old2.txt": b"o", "p/k.log": b"l", "p2/x": b"x",
              "other/y": b"y"}  # fmt: skip
    _put(rclone_s3.client(), bucket, others)
    _write(tmp_path / "src", {"a.txt": "a", "sub/b.txt": "b"})
    args = dict(exclude=["*.log"], delete_extra=True, connection=conn)
    dry = upload_directory(str(tmp_path / "src"), f"s3://{bucket}/p", dry_run=True, **args)
    assert dry.deleted == ["p/old.txt", "p/sub/old2.txt"]
    real = upload_directory(str(tmp_path / "src"), f"s3://{bucket}/p", **args)
    assert real.deleted == ["p/old.txt", "p/sub/old2.txt"] and real.objects == 2
    keys = sorted(o["Key"] for o in rclone_s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["other/y", "p/a.txt", "p/k.log", "p/sub/b.txt", "p2/x"]


def test_empty_sources_warn_and_complete(rclone_s3, conn, bucket_factory, tmp_path, caplog):
    bucket = bucket_factory(rclone_s3)
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        down = download_prefix(f"s3://{bucket}/none", str(tmp_path / "d"), connection=conn)
        up = upload_directory(str(tmp_path / "empty"), f"s3://{bucket}/x", connection=conn)
    assert (down.objects, up.objects, down.failed, up.failed) == (0, 0, {}, {})
    warnings = [r.getMessage() for r in caplog.records if "empty source" in r.getMessage()]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)


def _mount_tiny_tmpfs(path: Path) -> bool:
    path.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except OSError:
        return False


@pytest.fixture(params=["tmpfs", "simulated"])
def full_disk(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 1 MiB disk: a real tmpfs (needs root; skipped otherwise), or simulated writes."""
    mnt = tmp_path / "tiny"
    if request.param == "tmpfs":
        if not _mount_tiny_tmpfs(mnt):
            pytest.skip("cannot mount a tmpfs here (needs root)")
        yield mnt
        subprocess.run(["umount", str(mnt)], check=True, timeout=10)
        return
    from prefect_s3_concurrency.s3.engines import base, boto3_engine, objects

    real = base.write_at
    written: dict[int, int] = {}

    def limited(fd: int, data: Any, offset: int, digest: Any = None) -> int:  # > 1 MiB: ENOSPC
        written[fd] = max(written.get(fd, 0), offset + len(memoryview(data)))
        if written[fd] > 2**20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset, digest)

    mnt.mkdir()
    for module in (base, boto3_engine, objects):  # every place that writes downloaded bytes
        monkeypatch.setattr(module, "write_at", limited)
    yield mnt


def test_full_disk_is_one_clear_error(rclone_s3, conn, bucket_factory, full_disk) -> None:
    bucket = bucket_factory(rclone_s3)
    _put(
        rclone_s3.client(), bucket, {"f/a-small.txt": b"s" * 1000, "f/b-big.bin": b"B" * 3 * 2**20}
    )
    state = download_prefix(
        f"s3://{bucket}/f", str(full_disk), workers=1, connection=conn, return_state=True
    )
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed) and "\n" not in str(exc)
    assert "f/b-big.bin" in str(exc) and "no space left on the device" in str(exc)
    assert exc.summary.objects == 1 and (full_disk / "a-small.txt").stat().st_size == 1000
    assert not (full_disk / "b-big.bin").exists() and partials(full_disk) == []
    assert task_retries(state.state_details.flow_run_id) == 0  # a retry cannot free space


def test_cli_rejects_zero_workers_in_one_line(tmp_path, capsys) -> None:
    code = main(["cp", "s3://bkt/x", str(tmp_path), "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--workers" in err and "Must be >= 1" in err


def test_no_deletion_after_a_failed_transfer(rclone_s3, conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    _put(rclone_s3.client(), bucket, {"p/a.txt": b"a", "p/b.txt": b"b"})
    dest = tmp_path / "dest"
    _write(dest, {"a.txt/blocker": "a directory where a file should go", "old.txt": "extra"})
    state = download_prefix(f"s3://{bucket}/p", str(dest), delete_extra=True, connection=conn,
                            return_state=True)  # fmt: skip
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed) and list(exc.summary.failed) == ["p/a.txt"]
    assert exc.summary.deleted == [] and (dest / "old.txt").read_text() == "extra"
    assert (dest / "b.txt").read_bytes() == b"b" and partials(dest) == []
    assert "Is a directory" in exc.summary.failed["p/a.txt"]
    assert task_retries(state.state_details.flow_run_id) == 0  # permanent: not retried
