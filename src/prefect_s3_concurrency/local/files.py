"""The upload side's view of a local directory: which files to send, which to refuse, and why.

:func:`scan_local_files` walks a source directory with ``os.scandir`` and sorts what it finds
into three groups, so nothing is dropped silently:

* ``files``: regular files to upload, with their relative POSIX path and size;
* ``rejected``: entries that are deliberately not uploaded, each with its reason: symbolic
  links (not followed by default; with ``follow_symlinks`` a target outside the source
  directory is still refused unless ``allow_outside_symlinks``), names that are not valid
  UTF-8 (an S3 key is UTF-8), and special files (FIFOs, sockets, devices);
* ``unreadable``: directories and files that could not be read. A caller must treat these
  as failures: a subtree it could not list must never look "absent" to a sync.

This project's temp files (``*.s3c.partial``) are never listed. Paths in reasons and keys
of the dicts go through :func:`~errors.printable`, so control characters and
undecodable bytes are shown escaped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prefect_s3_concurrency.errors import ConfigurationError, LocalIOError, printable
from prefect_s3_concurrency.local.paths import (
    MAX_KEY_BYTES,
    S3Url,
    is_partial_name,
    matches_filters,
)
from prefect_s3_concurrency.runtime import progress
from prefect_s3_concurrency.s3.records import LocalFile

LINK_SKIPPED = "symbolic link not followed (follow_symlinks=True uploads its target)"
NOT_UTF8 = "file name is not valid UTF-8, so it cannot be an S3 key"


@dataclass
class LocalScan:
    """What :func:`scan_local_files` found under a directory."""

    files: list[tuple[str, Path, int]] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass
class _Walk:
    root: str
    include: Sequence[str]
    exclude: Sequence[str]
    follow: bool
    outside_ok: bool
    scan: LocalScan = field(default_factory=LocalScan)
    seen: set[tuple[int, int]] = field(default_factory=set)

    def inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def reject(self, path: str, reason: str) -> None:
        self.scan.rejected[printable(path)] = reason

    def unreadable(self, path: str, what: str, exc: OSError) -> None:
        self.scan.unreadable[printable(path)] = f"cannot read {what}: {exc.strerror or exc}"

    def link_refusal(self, entry: os.DirEntry[str]) -> str | None:
        """Why a symlink must not be followed, or None if it may be."""
        if not self.follow:
            return LINK_SKIPPED
        if not os.path.exists(entry.path):
            return "broken symbolic link"
        if not self.outside_ok and not self.inside(entry.path):
            target = printable(os.path.realpath(entry.path))
            return (
                f"symbolic link to {target}, outside the source directory "
                "(allow_outside_symlinks=True uploads it)"
            )
        return None

    def visit(self, directory: str, prefix: str) -> list[tuple[str, str]]:
        """List one directory; return the subdirectories to walk next."""
        try:
            st = os.stat(directory)
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.unreadable(directory, "directory", exc)
            return []
        if (st.st_dev, st.st_ino) in self.seen:  # a followed link back into the walk
            self.reject(directory, "symbolic link loop: directory already listed")
            return []
        self.seen.add((st.st_dev, st.st_ino))
        return [sub for e in entries if (sub := self.entry(e, prefix)) is not None]

    def entry(self, entry: os.DirEntry[str], prefix: str) -> tuple[str, str] | None:
        """Sort one directory entry; return ``(path, rel prefix)`` if it is a directory."""
        rel = prefix + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=self.follow)
            if not is_dir and (is_partial_name(entry.name) or not self.wanted(rel)):
                return None
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                self.reject(entry.path, NOT_UTF8)
                return None
            if entry.is_symlink() and (reason := self.link_refusal(entry)) is not None:
                self.reject(entry.path, reason)
                return None
            if is_dir:
                return entry.path, rel + "/"
            mode = entry.stat(follow_symlinks=self.follow)
            if not stat.S_ISREG(mode.st_mode):
                self.reject(entry.path, "not a regular file (FIFO, socket or device)")
            elif not os.access(entry.path, os.R_OK):
                self.scan.unreadable[printable(entry.path)] = "cannot read file: permission denied"
            else:
                self.scan.files.append((rel, Path(entry.path), mode.st_size))
        except OSError as exc:
            self.unreadable(entry.path, "file", exc)
        return None

    def wanted(self, rel: str) -> bool:
        return matches_filters(rel, self.include, self.exclude)


def require_dir_parameter(value: str, name: str) -> None:
    """Refuse an empty directory parameter instead of silently using the current directory.

    Raises:
        ConfigurationError: If ``value`` is empty or only spaces.
    """
    if not str(value).strip():
        raise ConfigurationError(
            f"{name} is empty: give a directory (use '.' for the current directory)"
        )


def source_root(source_dir: str) -> Path:
    """Check an upload source and return it as a path.

    Raises:
        ConfigurationError: If it is empty, a file rather than a directory, or missing.
    """
    require_dir_parameter(source_dir, "source_dir")
    root = Path(source_dir).expanduser()
    shown = printable(root)
    if root.exists() and not root.is_dir():
        raise ConfigurationError(
            f"source '{shown}' is a file, not a directory: upload-directory uploads the files "
            f"under a directory (give its parent and --include '{printable(root.name)}')"
        )
    if not root.is_dir():
        raise ConfigurationError(f"source directory '{shown}' does not exist")
    return root


def scan_local_files(
    root: Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    *,
    follow_symlinks: bool = False,
    allow_outside_symlinks: bool = False,
) -> LocalScan:
    """Walk ``root`` and sort its entries into files, rejected entries and unreadable ones.

    Args:
        root: The source directory.
        include: Globs on the relative POSIX path a file must match (any); none means all.
        exclude: Globs that leave matching files out (silently: the user asked for it).
        follow_symlinks: Follow symbolic links to files and directories.
        allow_outside_symlinks: With ``follow_symlinks``, also follow links whose target is
            outside ``root``.

    Returns:
        The scan; ``files`` sorted by relative path.
    """
    walk = _Walk(os.path.realpath(root), include, exclude, follow_symlinks, allow_outside_symlinks)
    todo = [(os.fspath(root), "")]
    while todo:
        directory, prefix = todo.pop()
        todo.extend(reversed(walk.visit(directory, prefix)))
    walk.scan.files.sort()
    return walk.scan


def list_local_files(
    root: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[tuple[str, Path, int]]:
    """Return ``(relative posix path, path, size)`` of the regular files under ``root``.

    Symbolic links are not followed. Raises :class:`LocalIOError` naming the first entry that
    could not be read, rather than return an incomplete list.
    """
    scan = scan_local_files(root, include, exclude)
    for path, reason in scan.unreadable.items():
        raise LocalIOError(f"{path}: {reason}")
    return scan.files


def plan_uploads(
    files: Sequence[tuple[str, Path, int]], url: S3Url
) -> tuple[list[LocalFile], dict[str, str]]:
    """Give each local file its key under ``url``; return the files and the rejected paths."""
    items: list[LocalFile] = []
    rejected: dict[str, str] = {}
    for rel, path, size in files:
        key = url.key_for(rel)
        try:
            too_long = len(key.encode("utf-8")) > MAX_KEY_BYTES
        except UnicodeEncodeError:
            rejected[printable(path)] = NOT_UTF8
            continue
        if too_long:
            rejected[printable(path)] = "object key longer than 1024 bytes"
        else:
            items.append(LocalFile(str(path), key, size))
    progress.expect(len(items), sum(item.size for item in items))
    return items, rejected
