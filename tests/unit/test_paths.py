"""Unit tests for the pure helpers in local.paths and s3.integrity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from prefect_s3_concurrency.errors import ConfigurationError, UnsafeKeyError
from prefect_s3_concurrency.local.paths import (
    make_batches,
    matches_filters,
    parse_s3_url,
    relative_key,
    safe_local_path,
)
from prefect_s3_concurrency.s3.etag import ETag
from prefect_s3_concurrency.s3.integrity import file_md5, multipart_etag, part_md5s


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "folder"),
    [
        ("s3://bucket", "bucket", "", ""),
        ("s3://bucket/", "bucket", "", ""),
        ("s3://my.bucket-1/a/b", "my.bucket-1", "a/b", "a/b/"),
        ("s3://bucket/a/b/", "bucket", "a/b/", "a/b/"),
    ],
)
def test_parse_s3_url(url: str, bucket: str, prefix: str, folder: str) -> None:
    parsed = parse_s3_url(url)
    assert (parsed.bucket, parsed.prefix, parsed.folder) == (bucket, prefix, folder)


@pytest.mark.parametrize(
    "url",
    ["http://bucket/x", "bucket/x", "s3:/bucket", "s3://", "s3://B", "s3://a..b/x", "", "s3://x"],
)
def test_parse_s3_url_rejects(url: str) -> None:
    with pytest.raises(ConfigurationError, match="s3://|bucket"):
        parse_s3_url(url)


def test_key_for_joins_under_folder() -> None:
    assert parse_s3_url("s3://bkt/out").key_for("x/y.txt") == "out/x/y.txt"
    assert parse_s3_url("s3://bkt").key_for("y.txt") == "y.txt"


def test_relative_key() -> None:
    assert relative_key("data/a/b.txt", "data/") == "a/b.txt"
    assert relative_key("a.txt", "") == "a.txt"


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "..",
        ".",
        "a/../../b",
        "a/./b",
        "/abs",
        "C:\\x",
        "C:x",
        "a\\..\\..\\b",
        "nul\x00byte",
        "a//b",
        "",
        "x" * 256,
        "/".join(["d" * 200] * 6),
        ".f.0a1b2c3d.s3c.partial",
    ],
)
def test_safe_local_path_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        safe_local_path(tmp_path, key)


@pytest.mark.parametrize(
    "key", ["a.txt", "dir/sub/file name.txt", "ünïcødé/日本.txt", "a+b%20c#d?e", "..hidden", "a..b"]
)
def test_safe_local_path_accepts_and_stays_inside(tmp_path: Path, key: str) -> None:
    target = safe_local_path(tmp_path, key)
    assert str(target).startswith(str(tmp_path.resolve()) + os.sep)
    assert target.name == key.split("/")[-1]


def test_safe_local_path_refuses_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeKeyError, match="outside"):
        safe_local_path(dest, "link/evil.txt")


def test_filters() -> None:
    assert matches_filters("a/b.csv", [], [])
    assert matches_filters("a/b.csv", ["*.csv"], [])
    assert not matches_filters("a/b.txt", ["*.csv"], [])
    assert not matches_filters("tmp/b.csv", ["*.csv"], ["tmp/*"])
    assert matches_filters("x/tmp/b.csv", ["*.csv"], ["tmp/*"])


def test_make_batches_bounds_count_and_bytes() -> None:
    sizes = [10] * 25 + [1000] + [10] * 5
    batches = make_batches(sizes, lambda s: s, max_objects=10, max_bytes=100)
    assert [x for b in batches for x in b] == sizes  # every item once, in order
    for batch in batches:
        assert len(batch) <= 10
        assert sum(batch) <= 100 or len(batch) == 1  # an oversize object rides alone


def test_make_batches_spreads_over_workers() -> None:
    batches = make_batches(
        list(range(100)), lambda _: 1, max_objects=1000, max_bytes=10**9, min_batches=8
    )
    assert len(batches) >= 8
    assert make_batches([], lambda _: 1, 10, 10) == []
    with pytest.raises(ConfigurationError):
        make_batches([1], lambda _: 1, 0, 10)


def test_etags(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = tmp_path / "f"
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    assert file_md5(path) == md5
    assert ETag.parse(f'"{md5.upper()}"').md5 == md5
    parts = [data[i : i + 1024 * 1024] for i in range(0, len(data), 1024 * 1024)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(path, 1024 * 1024) == f"{expected}-4"
    assert ETag(f"{expected}-4").matches_multipart(part_md5s(path, 1024 * 1024))
    assert not ETag(f"{'1' * 32}-4").matches_multipart(part_md5s(path, 1024 * 1024))
