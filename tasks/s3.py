"""Thin Prefect ``@task`` wrappers over :mod:`s3.transfer`.

A task handles a whole batch, so Prefect's per-task cost (~6 ms and some memory in the flow
process) is paid once per batch, not once per object. A batch with failed objects raises
:class:`BatchFailed`, so Prefect's task retries re-run it; the re-run skips what is already
done and transfers only the failed objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from prefect_s3_concurrency.errors import FailedWithPayload, is_permanent, objects_failed
from prefect_s3_concurrency.local.sync import delete_local
from prefect_s3_concurrency.local.tempfiles import remove_stale_partials, remove_stale_scratch
from prefect_s3_concurrency.runtime.budget import RequestBudget, held
from prefect_s3_concurrency.s3.connection import S3Connection, get_s3_client
from prefect_s3_concurrency.s3.engines import in_flight_for, open_engine
from prefect_s3_concurrency.s3.transfer import (
    BatchResult,
    LocalFile,
    S3Object,
    delete_objects,
    download_objects,
    list_objects,
    upload_files,
)
from prefect_s3_concurrency.s3.upload_options import UploadOptions
from prefect_s3_concurrency.transforms.resume import find_current_outputs


class BatchFailed(FailedWithPayload):
    """Some objects of a batch failed; ``result`` keeps what succeeded and why others failed."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        super().__init__(objects_failed(result.failed))


def _raise_on_failures(result: BatchResult) -> BatchResult:
    if result.failed:
        raise BatchFailed(result)
    return result


def retry_unless_permanent(task_obj: Any, run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: skip retries a retry cannot help.

    A batch whose every failure is permanent (full disk, no permission, unsafe key) fails at
    once instead of waiting through its retry delays; so does every batch once the run was
    interrupted (Ctrl-C, SIGTERM); anything else is retried.
    """
    from prefect_s3_concurrency.runtime import interrupt

    if interrupt.stopping():
        return False
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception:  # noqa: BLE001 - unknown cause: retrying is the safe choice
            return True
    if isinstance(exc, BatchFailed):
        return exc.result.retryable
    return not (isinstance(exc, BaseException) and is_permanent(exc))


@task(name="list_objects", cache_policy=NO_CACHE)
def list_objects_task(
    conn: S3Connection,
    bucket: str,
    folder: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    pool_size: int = 10,
) -> list[S3Object]:
    """List the objects under ``s3://bucket/folder`` that pass the glob filters.

    ``pool_size`` should match the batch tasks' so that the run builds one client, not two.
    """
    engine = open_engine(conn, "auto", pool_size)
    try:
        return list_objects(engine, bucket, folder, include, exclude)
    finally:
        engine.close()


# key -> size of what earlier attempts of a batch task run transferred or tried (a failed
# PUT may still have been stored), so that its retry counts them as transferred, not as
# "skipped (already identical)". Prefect retries a task in the same process, under the same
# task run id.
_earlier_attempts: dict[str, dict[str, int]] = {}
_attempts_lock = threading.Lock()


def _with_attempts(
    sizes: Mapping[str, int], run: Callable[[Mapping[str, int]], BatchResult]
) -> BatchResult:
    """Run one attempt of a batch, handing it what earlier attempts of this run transferred."""
    run_id = str(task_run.id or "")
    with _attempts_lock:
        earlier = _earlier_attempts.pop(run_id, {}) if run_id else {}
    result = run(earlier)
    if result.failed and run_id:
        tried = [*result.transferred, *result.failed]
        done = {**earlier, **{k: sizes[k] for k in tried if k in sizes}}
        with _attempts_lock:
            _earlier_attempts[run_id] = done
    return result


@task(name="download_batch", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent)
def download_batch(
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    items: list[tuple[S3Object, str]],
    skip_existing: bool = True,
    dry_run: bool = False,
    engine: str = "auto",
    requests_in_flight: int | None = None,
    root: str | None = None,
    request_budget: RequestBudget | None = None,
) -> BatchResult:
    """Download a batch of objects to their local paths; raise BatchFailed on any failure.

    ``root`` is the destination directory every path component is opened from (no symlink
    followed at write time); None means each target's own directory. With a
    ``request_budget``, the batch holds its slots while it runs and never has more
    requests in flight.
    """
    eng = open_engine(conn, engine, pool_size, requests_in_flight)
    in_flight = in_flight_for(engine, requests_in_flight)
    sizes = {o.key: o.size for o, _ in items}
    try:
        with held(request_budget) as slots:
            result = _with_attempts(sizes, lambda earlier: download_objects(
                eng, bucket, items, skip_existing, dry_run, root, in_flight, earlier, slots
            ))  # fmt: skip
    finally:
        eng.close()
    return _raise_on_failures(result)


@task(name="upload_batch", cache_policy=NO_CACHE, retry_condition_fn=retry_unless_permanent)
def upload_batch(
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    items: list[LocalFile],
    existing: Mapping[str, S3Object | tuple[int, str]] | None = None,
    dry_run: bool = False,
    engine: str = "auto",
    requests_in_flight: int | None = None,
    upload_options: UploadOptions | None = None,
    request_budget: RequestBudget | None = None,
) -> BatchResult:
    """Upload a batch of files; a retry checks S3 first so only the failed files go again.

    ``upload_options`` set Content-Type, encryption, storage class and Cache-Control; a
    ``request_budget`` bounds the requests in flight as for :func:`download_batch`.
    """
    eng = open_engine(conn, engine, pool_size, requests_in_flight)
    in_flight = in_flight_for(engine, requests_in_flight)
    retrying = (task_run.run_count or 1) > 1
    sizes = {f.key: f.size for f in items}
    try:
        with held(request_budget) as slots:
            result = _with_attempts(sizes, lambda earlier: upload_files(
                eng, bucket, items, existing, check_remote=retrying, dry_run=dry_run,
                in_flight=in_flight, done_before=earlier, options=upload_options,
                max_requests=slots,
            ))  # fmt: skip
    finally:
        eng.close()
    return _raise_on_failures(result)


@task(name="check_outputs", cache_policy=NO_CACHE)
def check_outputs_batch(
    conn: S3Connection,
    pool_size: int,
    bucket: str,
    items: list[tuple[str, dict[str, str]]],
) -> tuple[list[str], dict[str, str]]:
    """HEAD a batch of outputs; return the keys whose metadata matches, and unchecked keys."""
    return find_current_outputs(get_s3_client(conn, pool_size), bucket, items)


@task(name="remove_stale_scratch", cache_policy=NO_CACHE)
def remove_stale_scratch_task(root: str, prefix: str) -> list[str]:
    """Delete scratch directories ``root/<prefix>*`` left by killed runs (live runs' kept)."""
    return remove_stale_scratch(Path(root), prefix)


@task(name="remove_stale_partials", cache_policy=NO_CACHE)
def remove_stale_partials_task(dest_dir: str) -> list[str]:
    """Delete temp files under ``dest_dir`` left by killed runs (live runs' are kept)."""
    return remove_stale_partials(Path(dest_dir))


@task(name="delete_local_extras", cache_policy=NO_CACHE)
def delete_local_task(dest_dir: str, rels: list[str]) -> tuple[list[str], dict[str, str]]:
    """Delete the extra files ``rels`` under ``dest_dir``; return deleted and failed."""
    return delete_local(Path(dest_dir), rels)


@task(name="delete_extra_objects", cache_policy=NO_CACHE)
def delete_objects_task(
    conn: S3Connection, bucket: str, keys: list[str]
) -> tuple[list[str], dict[str, str]]:
    """Delete the extra objects ``keys``; return deleted and failed."""
    engine = open_engine(conn, "auto")
    try:
        return delete_objects(engine, bucket, keys)
    finally:
        engine.close()
