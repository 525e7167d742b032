"""Locked temp files for atomic downloads, and clean-up of temp files left by killed runs.

A download writes ``.<name>.<rand>.s3c.partial`` beside its target, holding an exclusive
``flock`` on it until the file is renamed into place or removed. The kernel drops the lock
when the writing process dies, however it dies, so at the start of the next run an
*unlocked* temp file is known to be stale and is deleted at once, while a *locked* one
belongs to a live run (another process, or another flow in this one) and is left alone.
Where ``flock`` is unavailable (no ``fcntl``, or a file system that refuses it), only temp
files older than :data:`STALE_AGE_SECONDS` are deleted.

Scratch directories (:func:`locked_scratch_dir`) follow the same rule: each holds a marker
file, locked for the directory's life, so :func:`remove_stale_scratch` can tell a killed
run's directory from a live one's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prefect_s3_concurrency.local.paths import is_partial_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
# Fallback only (no usable flock): a temp file untouched this long is surely abandoned.
STALE_AGE_SECONDS = 6 * 3600


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive non-blocking lock: True if taken, False if held elsewhere, None if
    locking is not supported here."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _remove_if_stale(path: str, now: float) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
    except OSError:  # vanished, a symlink, or unreadable: not ours to judge
        return False
    try:
        locked = _try_lock(fd)
        if locked is False:
            return False  # a live run is writing it
        if locked is None and now - os.fstat(fd).st_mtime < STALE_AGE_SECONDS:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_partials(root: Path) -> list[str]:
    """Delete temp files under ``root`` that no live run holds (see the module docstring).

    Only regular files with this project's temp-file names are considered; symlinked
    directories are not followed, so nothing outside ``root`` is touched.

    Args:
        root: Destination directory of a download.

    Returns:
        The removed paths, relative to ``root``.
    """
    removed: list[str] = []
    now = time.time()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if is_partial_name(name) and _remove_if_stale(path, now):
                removed.append(Path(path).relative_to(root).as_posix())
    if removed:
        log.warning("removed %d stale temp file(s) left by an earlier run", len(removed))
    return sorted(removed)


SCRATCH_MARKER = ".s3c-scratch.lock"  # in every scratch dir; locked while its run lives


@contextlib.contextmanager
def locked_scratch_dir(prefix: str, root: Path | None = None) -> Iterator[Path]:
    """Create a scratch directory, hold its marker's lock while in use, then remove it.

    The marker is locked before its owner's PID is written, so a marker that is unlocked but
    not empty was left by a dead run (see :func:`remove_stale_scratch`).

    Args:
        prefix: Directory name prefix, e.g. ``"square-objects-"``.
        root: Parent directory; the system temp directory if None.

    Yields:
        The new directory.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    fd: int | None = None
    try:
        fd = os.open(path / SCRATCH_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a cleaner peeks
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # still locked: no cleaner races us
        if fd is not None:
            os.close(fd)


def _scratch_is_stale(directory: str, now: float) -> bool:
    try:
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != getattr(os, "getuid", int)():
            return False  # a symlink, a file, or another user's: not ours
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK
        fd = os.open(os.path.join(directory, SCRATCH_MARKER), flags)
    except OSError:  # no marker: not made by this project (or not yet)
        return False
    try:
        marker = os.fstat(fd)
        if not stat.S_ISREG(marker.st_mode):
            return False
        locked = _try_lock(fd)
        if locked is False:
            return False  # a live run holds it
        old = now - marker.st_mtime >= STALE_AGE_SECONDS
        # Empty: its creator may be between creating and locking it; only age proves it dead.
        return old if (locked is None or marker.st_size == 0) else True
    finally:
        os.close(fd)  # releases the lock taken above


def remove_stale_scratch(root: Path, prefix: str) -> list[str]:
    """Delete scratch directories ``root/<prefix>*`` that a dead run left behind.

    Only directories made by :func:`locked_scratch_dir` (owned by this user, holding its
    marker file) whose marker no live process has locked are removed; symlinks are never
    followed, and nothing else under ``root`` is touched.

    Args:
        root: Where scratch directories are created.
        prefix: Their name prefix.

    Returns:
        The names of the removed directories.
    """
    removed: list[str] = []
    now = time.time()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        if name.startswith(prefix) and _scratch_is_stale(path, now):
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(name)
    if removed:
        log.warning("removed %d stale scratch dir(s) left by an earlier run", len(removed))
    return removed
