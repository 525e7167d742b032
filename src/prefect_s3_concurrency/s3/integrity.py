"""Checksums: MD5 and S3 multipart ETags, computed by streaming."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path

MIB = 2**20
CHUNK = MIB  # read size for checksums
# Part sizes tried when checking a multipart ETag (ours first, then common tool defaults).
COMMON_PART_SIZES = (8 * MIB, 16 * MIB, 5 * MIB, 64 * MIB, 15 * MIB, 50 * MIB, 100 * MIB)


def normalize_etag(etag: str | None) -> str:
    """Strip quotes and whitespace from an ETag."""
    return (etag or "").strip().strip('"').lower()


def is_md5_etag(etag: str) -> bool:
    """Return True if ``etag`` is a plain 32-hex-digit MD5 (single-part upload)."""
    etag = normalize_etag(etag)
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)


def multipart_part_count(etag: str) -> int | None:
    """The part count ``N`` of a multipart ETag (``<32 hex>-N``); None for any other ETag."""
    head, sep, count = normalize_etag(etag).rpartition("-")
    return int(count) if sep and count.isdigit() and len(head) == 32 else None


def file_md5(path: Path) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """Return the S3 multipart ETag (``md5-of-part-md5s-N``) a file would have."""
    parts: list[bytes] = []
    with open(path, "rb") as fh:
        while part := fh.read(part_size):
            parts.append(hashlib.md5(part, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(parts)}"


def etag_matches(
    path: Path, etag: str, part_sizes: Iterable[int] = COMMON_PART_SIZES
) -> bool | None:
    """Check a local file against an S3 ETag.

    Args:
        path: Local file.
        etag: ETag reported by S3.
        part_sizes: Candidate multipart part sizes to try for ``-N`` ETags.

    Returns:
        True or False when the ETag is verifiable, None when it is not (e.g. SSE-KMS or an
        unknown part size), so that callers fall back to a size check.
    """
    etag = normalize_etag(etag)
    if is_md5_etag(etag):
        return file_md5(path) == etag
    count = multipart_part_count(etag)
    if count is None:
        return None
    size = path.stat().st_size
    for part_size in dict.fromkeys(part_sizes):
        if math.ceil(size / part_size) == count:
            if multipart_etag(path, part_size) == etag:
                return True
    return None
