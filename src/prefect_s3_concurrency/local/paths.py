"""Pure helpers: ``s3://`` URLs, safe key-to-path mapping, glob filters and batching."""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from prefect_s3_concurrency.errors import ConfigurationError, UnsafeKeyError

T = TypeVar("T")

# Bucket names per the S3 rules (3-63 chars, lowercase, digits, dots, hyphens).
BUCKET_PATTERN = r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]"
_BUCKET_RE = re.compile(f"^{BUCKET_PATTERN}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095  # Linux PATH_MAX (4,096) less the terminating NUL
# Listings skip zero-byte keys ending with '/' (folder markers); one that holds data is
# rejected with this reason instead of being dropped silently.
FOLDER_MARKER = "key ends with '/' but holds data (a folder marker with content): not a file"
# Temp files this project writes next to their destination: ``.<name>.<8 hex>.s3c.partial``.
# Only that exact shape (leading dot, random tag) is ours; any other ``*.s3c.partial`` file is
# a user's data: uploaded like any file, never cleaned up or deleted.
PARTIAL_SUFFIX = ".s3c.partial"
_PARTIAL_RE = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX), re.DOTALL)


@dataclass(frozen=True)
class S3Url:
    """A parsed ``s3://bucket/prefix`` location, valid by construction.

    Raises:
        ConfigurationError: An invalid bucket name, a NUL in the prefix, or a prefix that
            starts with ``/`` (``s3://b//p``: refused, not normalised, since S3 keys may
            really start with ``/``).
    """

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        shown = f"s3://{self.bucket}/{self.prefix}"
        if not _BUCKET_RE.match(self.bucket) or ".." in self.bucket:
            raise ConfigurationError(f"invalid bucket name {self.bucket!r} in {shown!r}")
        if "\x00" in self.prefix:
            raise ConfigurationError(f"NUL character in S3 prefix of {shown!r}")
        if self.prefix.startswith("/"):  # a distinct S3 prefix: never the one without '/'
            raise ConfigurationError(
                f"the prefix of {shown!r} starts with '/' (an empty path segment after the "
                f"bucket): write s3://{self.bucket}/{self.prefix.lstrip('/')}"
            )

    @property
    def folder(self) -> str:
        """The prefix as a folder: ``""`` or ending with exactly one ``/``."""
        return f"{self.prefix.rstrip('/')}/" if self.prefix.strip("/") else ""

    def key_for(self, relative: str) -> str:
        """Return the object key for ``relative`` under this location."""
        return f"{self.folder}{relative}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_s3_url(url: str) -> S3Url:
    """Parse ``s3://bucket[/prefix]``.

    Args:
        url: The location, e.g. ``s3://my-bucket/data/2024``.

    Returns:
        The bucket and prefix.

    Raises:
        ConfigurationError: If ``url`` is not an ``s3://`` URL, or :class:`S3Url` refuses
            its bucket or prefix.
    """
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise ConfigurationError(f"not an s3:// URL: {url!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = url[5:].partition("/")
    return S3Url(bucket=bucket, prefix=prefix)


def relative_key(key: str, folder: str) -> str:
    """Return ``key`` relative to ``folder`` (a prefix ending with ``/`` or empty)."""
    return key[len(folder) :] if folder and key.startswith(folder) else key


def check_relative_key(rel: str) -> None:
    """Reject a relative key that could escape a destination directory.

    Args:
        rel: Key relative to the source prefix.

    Raises:
        UnsafeKeyError: For empty keys and keys ending with ``/``, empty segments (``//``
            or a leading ``/``), drive-letter, backslash, NUL, ``.``/``..`` segments, and
            over-long names.
    """
    if not rel or rel.endswith("/"):  # only keys ending with '/' holding data get here
        raise UnsafeKeyError(FOLDER_MARKER)
    if "\x00" in rel:
        raise UnsafeKeyError("NUL character in key")
    if "\\" in rel:
        raise UnsafeKeyError("backslash in key")
    if rel.startswith("/"):  # "k//x.txt" under "k/", or "/etc/x" under no prefix
        raise UnsafeKeyError("empty path segment ('//' in the key, or a leading '/')")
    if _DRIVE_RE.match(rel):
        raise UnsafeKeyError("drive-letter path")
    if len(rel.encode("utf-8")) > MAX_KEY_BYTES:
        raise UnsafeKeyError("key longer than 1024 bytes")
    for part in rel.split("/"):
        if not part:
            raise UnsafeKeyError("empty path segment ('//' in the key)")
        if part in (".", ".."):
            raise UnsafeKeyError(f"path segment {part!r} is not allowed")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise UnsafeKeyError("path segment longer than 255 bytes")
        if is_partial_name(part):
            raise UnsafeKeyError("name collides with this project's temp-file suffix")


def is_partial_name(name: str) -> bool:
    """Return True if ``name`` has the exact shape of this project's temp-file names.

    ``.<name>.<8 hex>.s3c.partial`` only: ``thesis.s3c.partial`` or
    ``backup.s3c.partial.Ab3dEf9h`` are a user's files, never taken for temp files.
    """
    return _PARTIAL_RE.fullmatch(name) is not None


def partial_name(name: str, tag: str) -> str:
    """Return the temp-file name for ``name``: ``.<name>.<tag>.s3c.partial``, <= 255 bytes.

    Long names are shortened (whole UTF-8 characters) so the temp name stays a valid name.
    """
    room = MAX_NAME_BYTES - len(f"..{tag}{PARTIAL_SUFFIX}".encode())
    stem = name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f".{stem}.{tag}{PARTIAL_SUFFIX}"


def safe_local_path(dest_dir: Path, rel: str) -> Path:
    """Map a relative key to a path that is guaranteed to lie inside ``dest_dir``.

    Args:
        dest_dir: Destination directory.
        rel: Key relative to the source prefix.

    Returns:
        The absolute target path.

    Raises:
        UnsafeKeyError: If the key is unsafe, resolves outside ``dest_dir`` (symlinks
            included) or makes a path longer than the system's limit.
    """
    check_relative_key(rel)
    root = os.path.realpath(dest_dir)
    target = os.path.realpath(os.path.join(root, *rel.split("/")))
    if not target.startswith(root + os.sep):
        raise UnsafeKeyError("resolves outside the destination directory")
    if len(os.fsencode(target)) > MAX_PATH_BYTES:  # no stat or open would ever reach it
        raise UnsafeKeyError(f"local path longer than {MAX_PATH_BYTES:,} bytes")
    return Path(target)


def matches_filters(rel: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Return True if ``rel`` matches any include glob (or there are none) and no exclude glob.

    Globs use :func:`fnmatch.fnmatchcase`, so ``*`` also matches ``/``.
    """
    if include and not any(fnmatch.fnmatchcase(rel, pat) for pat in include):
        return False
    return not any(fnmatch.fnmatchcase(rel, pat) for pat in exclude)


def make_batches(
    items: Iterable[T],
    size_of: Callable[[T], int],
    max_objects: int,
    max_bytes: int,
    min_batches: int = 1,
) -> list[list[T]]:
    """Cut ``items`` into batches bounded by object count and total bytes.

    Batches are also made small enough that there are at least ``min_batches`` of them (when
    there are enough items), so that every worker thread gets work.

    Args:
        items: Objects in transfer order.
        size_of: Returns an item's size in bytes.
        max_objects: Most objects per batch (>= 1).
        max_bytes: Most bytes per batch (>= 1); a larger single object forms its own batch.
        min_batches: Aim for at least this many batches.

    Returns:
        Batches in order; every item appears exactly once.
    """
    if max_objects < 1 or max_bytes < 1:
        raise ConfigurationError("batch limits must be >= 1")
    items = list(items)
    per_batch = min(max_objects, max(1, math.ceil(len(items) / max(1, min_batches))))
    total = sum(size_of(i) for i in items)
    byte_cap = min(max_bytes, max(1, math.ceil(total / max(1, min_batches))))
    batches: list[list[T]] = []
    current: list[T] = []
    current_bytes = 0
    for item in items:
        size = size_of(item)
        if current and (len(current) >= per_batch or current_bytes + size > byte_cap):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        batches.append(current)
    return batches
