"""Plan a streamed download into a destination that may hold symbolic links.

A symlink inside the destination (``link -> real``) makes two keys one file: ``link/x`` and
``real/x``. :class:`DownloadPlanner` sees the listing page by page and decides across pages:

* the destination's own symlinks are found once, up front; each one's resolved target is
  a *shared* path (a directory or file that two keys can reach);
* a key whose path goes through no symlink (*direct*) is planned at once; it is remembered
  only when it lies under a shared path, so memory grows with the keys under symlinked
  directories, never with the whole listing;
* a key whose path goes through a symlink is held until the listing ends, then planned
  unless a direct key or another linked key resolves to the same file (all but the direct
  one are rejected: never two writes to one file).

A planned linked key's resolved path, relative to the destination, is what a sync must keep
besides the keys themselves (:attr:`DownloadPlanner.keep`): ``link/x`` keeps ``real/x``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prefect_s3_concurrency.errors import S3PipelineError
from prefect_s3_concurrency.local.paths import relative_key, safe_local_path
from prefect_s3_concurrency.runtime import progress
from prefect_s3_concurrency.s3.records import S3Object

SAME_FILE = "resolves to the same file as another key (symlink)"
Planned = tuple[list[tuple[S3Object, str]], dict[str, str]]


def shared_paths(root: str) -> set[str]:
    """Return the resolved targets (relative to ``root``) of the symlinks under ``root``.

    Symlinks are not followed; a target outside ``root`` is left out (keys through it are
    rejected by :func:`~local.paths.safe_local_path`).
    """
    shared: set[str] = set()
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if real.startswith(root + os.sep):
                    shared.add(os.path.normcase(real[len(root) + 1 :]))
    return shared


class DownloadPlanner:
    """Pair listed objects with safe local paths, page by page, one write per file."""

    def __init__(self, folder: str, dest: Path) -> None:
        self.folder, self.dest = folder, dest
        self.root = os.path.realpath(dest)
        self.shared = shared_paths(self.root) if os.path.isdir(self.root) else set()
        self.claimed: dict[str, str] = {}  # resolved rel -> direct key, under shared paths
        self.held: list[tuple[S3Object, str, str]] = []  # linked keys: obj, path, resolved rel
        self.keep: set[str] = set()  # resolved relative paths of the planned linked keys

    def _is_shared(self, rel: str) -> bool:
        parts = rel.split(os.sep)
        return any(os.sep.join(parts[:n]) in self.shared for n in range(1, len(parts) + 1))

    def plan(self, objects: Sequence[S3Object]) -> Planned:
        """Plan one page: direct keys now, linked keys held for :meth:`finish`."""
        items: list[tuple[S3Object, str]] = []
        rejected: dict[str, str] = {}
        for obj in objects:
            rel = relative_key(obj.key, self.folder)
            try:
                path = str(safe_local_path(self.dest, rel))
            except S3PipelineError as exc:
                rejected[obj.key] = str(exc)
                continue
            resolved = os.path.normcase(path[len(self.root) + 1 :])
            if path != os.path.join(self.root, *rel.split("/")):
                self.held.append((obj, path, resolved))
                continue
            if self.shared and self._is_shared(resolved):
                self.claimed[resolved] = obj.key
            items.append((obj, path))
        progress.expect(len(items), sum(obj.size for obj, _ in items))
        return items, rejected

    def finish(self) -> Planned:
        """Plan the held linked keys, now that every direct key is known."""
        counts: dict[str, int] = {}
        for _obj, _path, resolved in self.held:
            counts[resolved] = counts.get(resolved, 0) + 1
        items: list[tuple[S3Object, str]] = []
        rejected: dict[str, str] = {}
        for obj, path, resolved in self.held:
            if resolved in self.claimed or counts[resolved] > 1:
                rejected[obj.key] = SAME_FILE
            else:
                items.append((obj, path))
                self.keep.add(path[len(self.root) + 1 :].replace(os.sep, "/"))
        self.held = []
        progress.expect(len(items), sum(obj.size for obj, _ in items))
        return items, rejected
