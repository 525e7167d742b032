"""Locked temp files for atomic downloads, and clean-up of temp files left by killed runs.

A download writes ``.<name>.<rand>.s3c.partial`` beside its target, holding an exclusive
``flock`` on it until the file is renamed into place or removed. The kernel drops the lock
when the writing process dies, however it dies, so at the start of the next run an
*unlocked* temp file is known to be stale and is deleted at once, while a *locked* one
belongs to a live run (another process, or another flow in this one) and is left alone.
Where ``flock`` is unavailable (no ``fcntl``, or a file system that refuses it), only temp
files older than :data:`STALE_AGE_SECONDS` are deleted.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from tasks.paths import is_partial_name, partial_name

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


def open_partial(target: Path) -> tuple[Path, BinaryIO]:
    """Create and lock a new temp file beside ``target``.

    Args:
        target: Final path of the download.

    Returns:
        The temp path and its file object (binary, write mode), locked while open.
    """
    tmp = target.with_name(partial_name(target.name, uuid.uuid4().hex[:8]))
    fh = open(tmp, "xb")  # noqa: SIM115 - the caller closes it
    _try_lock(fh.fileno())
    return tmp, fh


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
