"""Sync semantics: find and delete what the destination holds but the source does not.

Deletion is opt-in (``delete_extra``) and conservative:

* only files/objects *under the destination* that pass the same include/exclude globs are
  candidates (excluded ones are kept, as in ``rclone sync``);
* this project's temp files (``*.s3c.partial``) are never candidates: stale ones are removed
  by :mod:`local.tempfiles`, live ones belong to a running download; nor are symbolic links,
  folder-marker keys (ending with ``/``) or local files whose names no key could have;
* a destination directory that cannot be listed fails the run (no partial listing);
* local deletion unlinks single files (a symlink itself, never its target) after checking
  that the containing directory resolves inside the destination; directories stay;
* the flows delete nothing when any transfer failed or when the source is empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prefect_s3_concurrency.errors import (
    UnsafeKeyError,
    describe_error,
    local_io_error,
)
from prefect_s3_concurrency.local.files import list_local_files
from prefect_s3_concurrency.local.paths import check_relative_key, matches_filters, relative_key
from prefect_s3_concurrency.s3.records import S3Object


def local_extras(
    root: Path, keep: Iterable[str], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Find files under ``root`` that pass the globs and are not in ``keep``.

    A file whose name no key could have (``back\\slash.txt``, ``C:notes.txt``: see
    :func:`~local.paths.check_relative_key`) is not the sync's business: never an extra.

    Args:
        root: Destination directory.
        keep: Relative paths the source has.
        include: Globs a candidate must match (any), as for the transfer.
        exclude: Globs that protect matching files.

    Returns:
        The extras, and the files left alone because no key could name them.
    """
    wanted = set(keep)
    extras: list[str] = []
    left_alone: list[str] = []
    for rel, _p, _s in list_local_files(root, include, exclude):
        if rel in wanted:
            continue
        try:
            check_relative_key(rel)
        except UnsafeKeyError:
            left_alone.append(rel)
        else:
            extras.append(rel)
    return extras, left_alone


def remote_extras(
    listed: Iterable[S3Object],
    folder: str,
    keep: Iterable[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[str]:
    """Return keys of ``listed`` objects (under ``folder``) that pass the globs and are not kept.

    Args:
        listed: Objects listed under the destination prefix.
        folder: The destination prefix as a folder (``""`` or ending with ``/``).
        keep: Keys the upload wrote or would write.
        include: Globs on the relative key a candidate must match (any).
        exclude: Globs that protect matching keys.
    """
    wanted = set(keep)
    return sorted(
        o.key
        for o in listed
        if o.key.startswith(folder)
        and not o.key.endswith("/")  # a folder marker is never an extra file
        and o.key not in wanted
        and matches_filters(relative_key(o.key, folder), include, exclude)
    )


def delete_local(root: Path, rels: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Unlink files ``rels`` (relative to ``root``), never touching anything outside it.

    Returns:
        The deleted relative paths, and ``rel -> reason`` for those that could not be deleted.
    """
    base = os.path.realpath(root)
    deleted: list[str] = []
    failed: dict[str, str] = {}
    for rel in rels:
        try:
            check_relative_key(rel)
            *dirs, name = rel.split("/")
            parent = os.path.realpath(os.path.join(base, *dirs))
            if parent != base and not parent.startswith(base + os.sep):
                raise ValueError("resolves outside the destination directory")
            path = os.path.join(parent, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # already gone: the goal is reached
            except OSError as exc:
                raise local_io_error(exc, path, "delete") from None
            deleted.append(rel)
        except Exception as exc:  # noqa: BLE001 - reported per file
            failed[rel] = describe_error(exc)
    return deleted, failed
