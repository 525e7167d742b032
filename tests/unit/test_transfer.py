"""S3 logic of s3.transfer against moto (in-process mock_aws)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from reliability_helpers import plan_downloads

from prefect_s3_concurrency.errors import S3AccessError
from prefect_s3_concurrency.local.files import list_local_files, plan_uploads
from prefect_s3_concurrency.local.paths import PARTIAL_SUFFIX, parse_s3_url
from prefect_s3_concurrency.s3.transfer import (
    LocalFile,
    S3Object,
    download_objects,
    list_objects,
    upload_files,
)

KEYS = {
    "data/a.txt": b"1\n2\n",
    "data/empty.bin": b"",
    "data/sub dir/ünï cødé.txt": "grüße\n".encode(),
    "data/deep/er/still/x.csv": b"a,b\n",
    "data/odd +%#?.txt": b"odd",
    "other/z.txt": b"not in prefix",
}


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="src")
        for key, body in KEYS.items():
            client.put_object(Bucket="src", Key=key, Body=body)
        yield client


def _download(s3, dest: Path, prefix: str = "data/", **kwargs):
    objects = list_objects(s3, "src", prefix)
    items, rejected = plan_downloads(objects, prefix, dest)
    return download_objects(s3, "src", items, **kwargs), rejected


def test_list_objects_prefix_and_filters(s3) -> None:
    keys = [o.key for o in list_objects(s3, "src", "data/")]
    assert keys == sorted(k for k in KEYS if k.startswith("data/"))
    assert [
        o.key for o in list_objects(s3, "src", "data/", include=["*.txt"], exclude=["sub*"])
    ] == [
        "data/a.txt",
        "data/odd +%#?.txt",
    ]
    assert list_objects(s3, "src", "nothing-here/") == []
    sizes = {o.key: o.size for o in list_objects(s3, "src", "")}
    assert sizes["data/empty.bin"] == 0 and len(sizes) == len(KEYS)


def test_list_objects_paginates(s3) -> None:
    for i in range(1005):
        s3.put_object(Bucket="src", Key=f"many/{i:05d}", Body=b"")
    assert len(list_objects(s3, "src", "many/")) == 1005


def test_missing_bucket_is_one_clear_line(s3) -> None:
    with pytest.raises(S3AccessError, match="bucket 'nope' does not exist") as info:
        list_objects(s3, "nope", "")
    assert "\n" not in str(info.value)


def test_download_round_trip_and_skip(s3, tmp_path: Path) -> None:
    result, rejected = _download(s3, tmp_path)
    assert rejected == {} and result.failed == {}
    assert len(result.transferred) == 5
    for key, body in KEYS.items():
        if key.startswith("data/"):
            assert (tmp_path / key.removeprefix("data/")).read_bytes() == body
    assert not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))
    again, _ = _download(s3, tmp_path)
    assert again.transferred == [] and len(again.skipped) == 5
    (tmp_path / "a.txt").write_bytes(b"changed")  # a different local copy is replaced
    third, _ = _download(s3, tmp_path)
    assert third.transferred == ["data/a.txt"]
    assert (tmp_path / "a.txt").read_bytes() == KEYS["data/a.txt"]


def test_download_dry_run_writes_nothing(s3, tmp_path: Path) -> None:
    result, _ = _download(s3, tmp_path, dry_run=True)
    assert len(result.transferred) == 5 and result.bytes == sum(
        len(b) for k, b in KEYS.items() if k.startswith("data/")
    )
    assert list(tmp_path.iterdir()) == []


def test_traversal_keys_are_rejected_not_written(s3, tmp_path: Path) -> None:
    for key in ["data/../escape.txt", "data/a/../../escape2.txt", "data//abs.txt", "data/x\\..\\y"]:
        s3.put_object(Bucket="src", Key=key, Body=b"evil")
    dest = tmp_path / "dest"
    dest.mkdir()
    result, rejected = _download(s3, dest)
    assert set(rejected) == {
        "data/../escape.txt",
        "data/a/../../escape2.txt",
        "data//abs.txt",
        "data/x\\..\\y",
    }
    assert result.failed == {}
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
    assert all(p.resolve().is_relative_to(dest.resolve()) for p in dest.rglob("*"))


def test_changed_object_fails_cleanly(s3, tmp_path: Path) -> None:
    stale = S3Object("data/a.txt", 4, "0" * 32)  # listed ETag no longer matches
    wrong_size = S3Object("data/empty.bin", 3, "")
    items = [(stale, str(tmp_path / "a.txt")), (wrong_size, str(tmp_path / "e.bin"))]
    result = download_objects(s3, "src", items)
    assert set(result.failed) == {"data/a.txt", "data/empty.bin"}
    assert "size mismatch" in result.failed["data/empty.bin"]
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_multipart_download_and_upload_20_mib(s3, tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    up = upload_files(s3, "src", [LocalFile(str(src), "big/big.bin", len(data))])
    assert up.failed == {} and up.transferred == ["big/big.bin"]
    etag = s3.head_object(Bucket="src", Key="big/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # it really was a multipart upload (8 MiB parts)
    out = tmp_path / "out"
    result, _ = _download(s3, out, prefix="big/")
    assert result.failed == {}
    assert hashlib.sha256((out / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    again, _ = _download(s3, out, prefix="big/")
    assert again.skipped == ["big/big.bin"]  # multipart ETag verified locally


def test_upload_skips_identical_and_verifies(s3, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "n e/st").mkdir(parents=True)
    (root / "n e/st/ü.txt").write_text("x")
    (root / "zero").write_bytes(b"")
    (root / f".f.0a1b2c3d{PARTIAL_SUFFIX}").write_text("temp")  # never uploaded
    url = parse_s3_url("s3://src/up")
    files, rejected = plan_uploads(list_local_files(root), url)
    assert rejected == {} and {f.key for f in files} == {"up/n e/st/ü.txt", "up/zero"}
    first = upload_files(s3, "src", files)
    assert sorted(first.transferred) == ["up/n e/st/ü.txt", "up/zero"]
    existing = {o.key: (o.size, o.etag) for o in list_objects(s3, "src", "up/")}
    second = upload_files(s3, "src", files, existing)
    assert second.transferred == [] and len(second.skipped) == 2
    third = upload_files(s3, "src", files, check_remote=True)
    assert len(third.skipped) == 2
    dry = upload_files(s3, "src", files, dry_run=True)
    assert len(dry.transferred) == 2
    assert s3.get_object(Bucket="src", Key="up/zero")["Body"].read() == b""


def test_upload_missing_file_fails_only_that_file(s3, tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("ok")
    files = [LocalFile(str(tmp_path / "gone"), "k/gone", 3), LocalFile(str(good), "k/good", 2)]
    result = upload_files(s3, "src", files)
    assert result.transferred == ["k/good"] and list(result.failed) == ["k/gone"]
    assert "FileNotFoundError" in result.failed["k/gone"]
