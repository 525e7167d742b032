"""Write-time path safety: every component opened relative to a directory fd, no symlinks.

The planner (:func:`local.paths.safe_local_path`) checks a key's path when the run starts;
the check must also hold when the file is written, since anything under ``dest_dir`` may
change meanwhile (a directory swapped for a symlink to ``/etc``). :func:`open_partial_at`
walks from ``root`` one component at a time with ``O_NOFOLLOW | O_DIRECTORY``, creating
missing directories with ``mkdirat``; a symlink anywhere on the way fails the object with
:class:`UnsafeKeyError`. The temp file is created with ``O_EXCL | O_NOFOLLOW`` in that
directory fd and renamed with ``renameat``, so the final name is replaced, never followed.
"""

from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from prefect_s3_concurrency.errors import UnsafeKeyError
from prefect_s3_concurrency.local.paths import partial_name
from prefect_s3_concurrency.local.tempfiles import _try_lock

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_SYMLINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}


def _open_dir(name: str, dir_fd: int | None, what: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        try:
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        except FileExistsError:
            pass  # another object of the run made it meanwhile
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS:
                raise UnsafeKeyError(f"{what}: a path component became a symlink") from None
            raise
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS:
            raise UnsafeKeyError(f"{what}: a symlink or file is in the way") from None
        raise


def open_parent(root: Path, target: Path) -> int:
    """Open ``target``'s directory, walking down from ``root`` without following symlinks.

    Args:
        root: The destination directory (may itself be reached through symlinks).
        target: A path under ``root``; missing directories are created.

    Returns:
        A directory fd (the caller closes it).

    Raises:
        UnsafeKeyError: If ``target`` is not under ``root`` or a component is a symlink.
    """
    try:
        rel = Path(os.path.abspath(target)).relative_to(os.path.abspath(root))
    except ValueError:
        raise UnsafeKeyError(f"{str(target)!r} is outside {str(root)!r}") from None
    parts = rel.parts[:-1]
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise UnsafeKeyError(f"path segment {part!r} is not allowed")
            next_fd = _open_dir(part, fd, str(rel))
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class PartialFile:
    """A locked temp file beside its target, both named relative to ``dir_fd``."""

    dir_fd: int
    fd: int
    tmp_name: str
    name: str
    path: Path  # the temp file's name, for reading back where /proc/self/fd is missing
    committed: bool = False

    def commit(self) -> None:
        """Rename the temp file over the target (``renameat``: a symlink there is replaced)."""
        os.replace(self.tmp_name, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.committed = True

    def close(self) -> None:
        """Close the file (unlocking it) and remove the temp file unless committed."""
        try:
            if not self.committed:
                try:
                    os.unlink(self.tmp_name, dir_fd=self.dir_fd)
                except FileNotFoundError:
                    pass
        finally:
            os.close(self.fd)
            os.close(self.dir_fd)

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_partial_at(root: Path, target: Path) -> PartialFile:
    """Create and lock ``.<name>.<rand>.s3c.partial`` beside ``target``, safely (see module).

    Raises:
        UnsafeKeyError: If a component of the path is (or became) a symlink.
    """
    dir_fd = open_parent(root, target)
    tmp = partial_name(target.name, uuid.uuid4().hex[:8])
    try:
        fd = os.open(tmp, _FILE_FLAGS, 0o666, dir_fd=dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    _try_lock(fd)
    return PartialFile(dir_fd, fd, tmp, target.name, target.with_name(tmp))
