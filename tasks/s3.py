"""Thin Prefect ``@task`` wrappers over :mod:`tasks.transfer`.

A task handles a whole batch, so Prefect's per-task cost (~6 ms and some memory in the flow
process) is paid once per batch, not once per object. A batch with failed objects raises
:class:`BatchFailed`, so Prefect's task retries re-run it; the re-run skips what is already
done and transfers only the failed objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from tasks.client import S3Connection, get_s3_client
from tasks.transfer import (
    BatchResult,
    LocalFile,
    S3Object,
    download_objects,
    list_objects,
    upload_files,
)


class BatchFailed(Exception):
    """Some objects of a batch failed; ``result`` keeps what succeeded and why others failed."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        keys = ", ".join(sorted(result.failed)[:5])
        more = f" (+{len(result.failed) - 5} more)" if len(result.failed) > 5 else ""
        super().__init__(f"{len(result.failed)} object(s) failed: {keys}{more}")

    def __reduce__(self):  # keep the result when pickled across processes
        return (type(self), (self.result,))


def _raise_on_failures(result: BatchResult) -> BatchResult:
    if result.failed:
        raise BatchFailed(result)
    return result


@task(name="list_objects", cache_policy=NO_CACHE)
def list_objects_task(
    conn: S3Connection,
    bucket: str,
    folder: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[S3Object]:
    """List the objects under ``s3://bucket/folder`` that pass the glob filters."""
    return list_objects(get_s3_client(conn), bucket, folder, include, exclude)


@task(name="download_batch", cache_policy=NO_CACHE)
def download_batch(
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    items: list[tuple[S3Object, str]],
    skip_existing: bool = True,
    dry_run: bool = False,
) -> BatchResult:
    """Download a batch of objects to their local paths; raise BatchFailed on any failure."""
    client = get_s3_client(conn, pool_size)
    return _raise_on_failures(download_objects(client, bucket, items, skip_existing, dry_run))


@task(name="upload_batch", cache_policy=NO_CACHE)
def upload_batch(
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    items: list[LocalFile],
    existing: dict[str, tuple[int, str]] | None = None,
    dry_run: bool = False,
) -> BatchResult:
    """Upload a batch of files; a retry checks S3 first so only the failed files go again."""
    client = get_s3_client(conn, pool_size)
    retrying = (task_run.run_count or 1) > 1
    result = upload_files(client, bucket, items, existing, check_remote=retrying, dry_run=dry_run)
    return _raise_on_failures(result)
