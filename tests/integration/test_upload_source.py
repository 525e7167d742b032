"""The upload side: unreadable subtrees, symlinks, undecodable names, source messages.

Runs against moto's threaded server (S3 logic only); the flows run under the session's
Prefect test harness.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.flows.transfer import TransferFailed, upload_directory
from prefect_s3_concurrency.local.files import LINK_SKIPPED, scan_local_files
from prefect_s3_concurrency.s3.connection import S3Connection


def _keys(client, bucket: str, prefix: str = "") -> dict[str, bytes]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"]] = body
    return out


def _failed_run(**kwargs) -> TransferFailed:
    state = upload_directory(return_state=True, **kwargs)
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed), exc
    return exc


@pytest.fixture
def s3(moto_server, bucket_factory):
    bucket = bucket_factory(moto_server)
    return moto_server.client(), bucket, S3Connection(endpoint_url=moto_server.endpoint_url)


def test_unreadable_subdirectory_fails_upload_and_deletes_nothing(s3, tmp_path, monkeypatch):
    """Item 1. Tests run as root, where ``chmod 000`` does not stop a directory listing, so
    the ``PermissionError`` is injected: ``os.scandir`` (what ``os.walk`` and the scanner
    call) raises it for ``src/locked`` exactly as the kernel would for a non-root user."""
    client, bucket, conn = s3
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "locked" / "inside.txt").write_bytes(b"precious")
    for key in ("dst/a.txt", "dst/locked/inside.txt", "dst/gone.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"old")
    real_scandir = os.scandir

    def scandir(path=".", *args):
        if os.fspath(path).endswith(f"{os.sep}locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    exc = _failed_run(
        source_dir=str(src), dest=f"s3://{bucket}/dst", delete_extra=True, connection=conn
    )
    assert "locked" in str(exc) and "Permission denied" in str(exc) and "\n" not in str(exc)
    assert exc.summary.failed == {str(src / "locked"): "cannot read directory: Permission denied"}
    assert exc.summary.deleted == []
    keys = _keys(client, bucket, "dst/")
    assert set(keys) == {"dst/a.txt", "dst/locked/inside.txt", "dst/gone.txt"}
    assert keys["dst/a.txt"] == b"a"  # the readable part was still uploaded


def _link_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0")
    outside_dir = tmp_path / "outside"
    outside_dir.mkdir()
    (outside_dir / "o.txt").write_bytes(b"o")
    (src / "passwd").symlink_to(secret)  # like src/passwd -> /etc/passwd
    (src / "alias.txt").symlink_to(src / "a.txt")  # inside the source
    (src / "outdir").symlink_to(outside_dir)
    (src / "sub" / "up").symlink_to(src)  # a loop
    return src


def test_symlinks_not_followed_by_default_and_reported(s3, tmp_path):
    """Item 3, default: no symlink is followed; each is rejected with its reason."""
    client, bucket, conn = s3
    src = _link_tree(tmp_path)
    exc = _failed_run(source_dir=str(src), dest=f"s3://{bucket}/d", connection=conn)
    assert set(_keys(client, bucket)) == {"d/a.txt"}
    assert exc.summary.rejected == {
        str(src / name): LINK_SKIPPED for name in ("passwd", "alias.txt", "outdir", "sub/up")
    }
    assert "4 key(s) rejected" in str(exc) and "allow_rejected=True" in str(exc)
    summary = upload_directory(
        str(src), f"s3://{bucket}/d", connection=conn, allow_rejected=True
    )  # the same rejections, accepted: the run completes
    assert len(summary.rejected) == 4 and summary.skipped == 1


def test_follow_symlinks_refuses_targets_outside_unless_allowed(s3, tmp_path):
    """Item 3, opt-in: links inside the source are followed, outside ones need a second flag."""
    client, bucket, conn = s3
    src = _link_tree(tmp_path)
    inside = upload_directory(
        str(src), f"s3://{bucket}/f", connection=conn, follow_symlinks=True, allow_rejected=True
    )
    assert _keys(client, bucket, "f/") == {"f/a.txt": b"inside", "f/alias.txt": b"inside"}
    assert set(inside.rejected) == {str(src / "passwd"), str(src / "outdir"), str(src / "sub/up")}
    assert "outside the source directory" in inside.rejected[str(src / "passwd")]
    assert "loop" in inside.rejected[str(src / "sub/up")]
    everything = upload_directory(
        str(src), f"s3://{bucket}/g", connection=conn, follow_symlinks=True,
        allow_outside_symlinks=True, allow_rejected=True,
    )  # fmt: skip
    assert _keys(client, bucket, "g/") == {
        "g/a.txt": b"inside", "g/alias.txt": b"inside", "g/passwd": b"root:x:0:0",
        "g/outdir/o.txt": b"o",
    }  # fmt: skip
    assert list(everything.rejected) == [str(src / "sub/up")]


def test_non_utf8_name_rejected_alone(s3, tmp_path):
    """Item 4: one undecodable name is rejected (named, escaped); the rest is uploaded."""
    client, bucket, conn = s3
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"good")
    bad = os.path.join(os.fsencode(src), b"bad\xff\x1b[31m.txt")
    with open(bad, "wb") as fh:
        fh.write(b"bad")
    exc = _failed_run(source_dir=str(src), dest=f"s3://{bucket}/u", connection=conn)
    assert _keys(client, bucket) == {"u/good.txt": b"good"}
    shown = f"{src}/bad\\xff\\x1b[31m.txt"
    assert list(exc.summary.rejected) == [shown]
    assert "not valid UTF-8" in exc.summary.rejected[shown]
    assert shown in str(exc) and "\x1b" not in str(exc)


def test_scan_reports_special_files(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / ".x.0a1b2c3d.s3c.partial").write_bytes(b"temp")  # never listed
    scan = scan_local_files(tmp_path)
    assert [rel for rel, _, _ in scan.files] == ["f.txt"]
    assert scan.rejected == {str(tmp_path / "pipe"): "not a regular file (FIFO, socket or device)"}


@pytest.mark.parametrize(
    ("source", "fragment"),
    [("file", "is a file, not a directory"), ("", "source_dir is empty"),
     ("missing", "does not exist")],
)  # fmt: skip
def test_upload_source_messages(s3, tmp_path, source, fragment):
    """Item 13: a file is not "missing", and an empty parameter is not the current directory."""
    _, bucket, conn = s3
    (tmp_path / "file").write_bytes(b"x")
    path = str(tmp_path / source) if source else ""
    with pytest.raises(ConfigurationError, match=fragment):
        upload_directory(path, f"s3://{bucket}/x", connection=conn)


def test_rejected_entries_block_deletes_unless_allowed(s3, tmp_path):
    """A skipped symlink's old copy at the destination is not deleted by a run that fails."""
    client, bucket, conn = s3
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    (src / "link.txt").symlink_to(src / "a.txt")
    client.put_object(Bucket=bucket, Key="s/link.txt", Body=b"from an earlier run")
    exc = _failed_run(source_dir=str(src), dest=f"s3://{bucket}/s", delete_extra=True,
                      connection=conn)  # fmt: skip
    assert exc.summary.deleted == [] and "s/link.txt" in _keys(client, bucket)
    allowed = upload_directory(str(src), f"s3://{bucket}/s", delete_extra=True,
                               allow_rejected=True, connection=conn)  # fmt: skip
    assert allowed.deleted == ["s/link.txt"] and set(_keys(client, bucket)) == {"s/a.txt"}
