"""Flows that download an S3 prefix and upload a directory, batch by batch, on threads.

Run as a script: ``python flows/transfer.py cp s3://bucket/prefix ./out`` (the ``prefect-s3``
command line).
"""

from __future__ import annotations

import time

from prefect import flow
from prefect.utilities.annotations import quote

from prefect_s3_concurrency.flows.batching import (
    IN_FLIGHT_PER_WORKER,
    Batch,
    BatchCutter,
    RunProgress,
    cut_batches,
    run_batches,
)
from prefect_s3_concurrency.flows.common import (
    DEFAULT_WORKERS,
    BatchMiB,
    BatchObjects,
    Globs,
    LocalDir,
    S3Location,
    TaskRetries,
    TransferSummary,
    Workers,
    check_not_empty,
    ensure_writable_dir,
    resolve_location,
    retrying,
    run_name,
)
from prefect_s3_concurrency.flows.runners import DaskAddress, io_runner
from prefect_s3_concurrency.flows.transfer_steps import (  # noqa: F401 - TransferFailed is public
    TransferFailed,
    _download_batches,
    _finish,
    _Listing,
    _may_delete,
    _pages,
    _record_deletes,
    _record_result,
    batch_arguments,
    log_left_alone,
)
from prefect_s3_concurrency.local.files import (
    plan_uploads,
    require_dir_parameter,
    scan_local_files,
    source_root,
)
from prefect_s3_concurrency.local.sync import local_extras, remote_extras
from prefect_s3_concurrency.parameters import documented
from prefect_s3_concurrency.runtime import progress as report_progress
from prefect_s3_concurrency.runtime.budget import RequestBudgetName, resolve_budget
from prefect_s3_concurrency.runtime.redact import install_log_redaction
from prefect_s3_concurrency.s3.connection import CredentialsBlock, S3Connection
from prefect_s3_concurrency.s3.engines import (
    EngineChoice,
    RequestsInFlight,
    batches_for,
    in_flight_for,
)
from prefect_s3_concurrency.s3.hints import exact_key_hint
from prefect_s3_concurrency.s3.integrity import MIB
from prefect_s3_concurrency.s3.transfer import (
    S3Object,
)
from prefect_s3_concurrency.s3.upload_options import UploadOptions
from prefect_s3_concurrency.tasks.s3 import (
    delete_local_task,
    delete_objects_task,
    download_batch,
    list_objects_task,
    remove_stale_partials_task,
    upload_batch,
)


@flow(name="download-prefix", flow_run_name=run_name("download", "source", "dest_dir"))
@documented
def download_prefix(
    source: S3Location,
    dest_dir: LocalDir,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    credentials: CredentialsBlock | None = None,
    connection: S3Connection = S3Connection(),  # noqa: B008 - frozen, shared safely
    delete_extra: bool = False,
    fail_if_empty: bool = False,
    dask_address: DaskAddress = None,
    allow_rejected: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
    request_budget: RequestBudgetName = None,
) -> TransferSummary:
    """Download every object under an S3 prefix into a local directory, keeping relative keys.

    Keys that would land outside the destination are rejected and reported, never written.
    Downloads are atomic and verified; identical local files are skipped; temp files left by
    a killed run are removed first.

    Args:
        source: Where to read: s3://bucket/prefix, or an S3Bucket block (bucket and folder).
        dest_dir: Local directory to write into; created if missing.
        include: Only keys (relative to the prefix) matching one of these globs.
        exclude: Skip keys matching any of these globs.
        skip_existing: Skip objects whose local copy has the same size and checksum.
        dry_run: Name what would be downloaded or deleted; transfer nothing.
        credentials: AWS or MinIO credentials block; empty means the default AWS chain.
        connection: Endpoint, region and botocore retry settings.
        delete_extra: Also delete local files (passing the globs) that the source lacks.
        fail_if_empty: Fail the run when the source holds no matching object.
        dask_address: Run the batch tasks on this Dask cluster instead of local threads.
        allow_rejected: Let the run succeed although some keys were rejected (unsafe paths).
        engine: Transfer engine: auto (the fastest available), obstore or boto3.
        request_budget: A Prefect global concurrency limit shared with other runs: each
            batch holds one slot per request it may have in flight (docs/sharing-s3.md).

    The bounded numbers (workers, batch sizes, retries) are described where they are
    declared, in :mod:`prefect_s3_concurrency.parameters`.
    """
    install_log_redaction()  # before any library logs a request
    start = time.perf_counter()
    url, conn = resolve_location(source, connection.with_credentials(credentials))
    budget = resolve_budget(request_budget, in_flight_for(engine, requests_in_flight))
    require_dir_parameter(dest_dir, "dest_dir")
    dest = ensure_writable_dir(dest_dir)
    stale = [] if dry_run else remove_stale_partials_task(str(dest))
    summary = TransferSummary(
        direction="download", source=str(url), destination=str(dest), dry_run=dry_run,
        stale_removed=len(stale),
    )  # fmt: skip
    progress, listing = RunProgress("download-progress", f"download {url}"), _Listing()
    lanes = batches_for(engine, workers)  # batch tasks at once (an async engine needs few)
    common = batch_arguments(
        conn, url.bucket, workers, dry_run, engine, requests_in_flight, budget, root=str(dest)
    )
    cut = BatchCutter[tuple[S3Object, str]](
        lambda i: i[0].size, batch_max_objects, batch_max_mib * MIB, lanes
    )
    batches = _download_batches(
        conn, url, dest, (include or (), exclude or ()), cut, summary, progress, listing,
        lambda b: {**common, "items": quote(b), "skip_existing": skip_existing},
    )  # fmt: skip
    with io_runner(lanes, dask_address) as runner:
        result = run_batches(
            runner, retrying(download_batch, task_retries), "download", batches, progress,
            lanes * IN_FLIGHT_PER_WORKER, lambda: listing.batches,
        )  # fmt: skip
    _record_result(summary, result)
    hint = "" if listing.objects else exact_key_hint(conn, url)
    check_not_empty(listing.objects, str(url), fail_if_empty, hint)
    if delete_extra:
        extras, left_alone = local_extras(dest, listing.keep, include or (), exclude or ())
        log_left_alone(left_alone)
        if _may_delete(summary, extras, listing.objects, allow_rejected):
            _record_deletes(summary, delete_local_task(str(dest), extras))
    summary.seconds = time.perf_counter() - start
    progress.finish(success=not summary.failed and (allow_rejected or not summary.rejected))
    return _finish(summary, "download-summary", allow_rejected)


@flow(name="upload-directory", flow_run_name=run_name("upload", "source_dir", "dest"))
@documented
def upload_directory(
    source_dir: LocalDir,
    dest: S3Location,
    include: Globs = None,
    exclude: Globs = None,
    workers: Workers = DEFAULT_WORKERS,
    batch_max_objects: BatchObjects = 100,
    batch_max_mib: BatchMiB = 256,
    skip_existing: bool = True,
    dry_run: bool = False,
    task_retries: TaskRetries = 2,
    credentials: CredentialsBlock | None = None,
    connection: S3Connection = S3Connection(),  # noqa: B008 - frozen, shared safely
    delete_extra: bool = False,
    fail_if_empty: bool = False,
    dask_address: DaskAddress = None,
    follow_symlinks: bool = False,
    allow_outside_symlinks: bool = False,
    allow_rejected: bool = False,
    engine: EngineChoice = "auto",
    requests_in_flight: RequestsInFlight = None,
    upload_options: UploadOptions = UploadOptions(),  # noqa: B008 - frozen, shared safely
    request_budget: RequestBudgetName = None,
) -> TransferSummary:
    """Upload every file under a local directory to an S3 prefix, keeping relative paths as keys.

    Uploads carry checksums S3 verifies (CRC64NVME, Content-MD5); identical objects are skipped.

    Args:
        source_dir: Local directory to read.
        dest: Where to write: s3://bucket/prefix, or an S3Bucket block (bucket and folder).
        include: Only files (relative paths) matching one of these globs.
        exclude: Skip files matching any of these globs.
        skip_existing: Skip files already stored with the same size and checksum.
        dry_run: Name what would be uploaded or deleted; transfer nothing.
        credentials: AWS or MinIO credentials block; empty means the default AWS chain.
        connection: Endpoint, region and botocore retry settings.
        delete_extra: Also delete objects under the prefix (passing the globs) with no local file.
        fail_if_empty: Fail the run when the directory holds no matching file.
        dask_address: Run the batch tasks on this Dask cluster instead of local threads.
        follow_symlinks: Follow symbolic links (skipped and reported by default).
        allow_outside_symlinks: With follow_symlinks, also follow links out of source_dir.
        allow_rejected: Let the run succeed although some files were rejected.
        engine: Transfer engine: auto (the fastest available), obstore or boto3.
        upload_options: Content-Type (guessed from each file name by default), server-side
            encryption, storage class and Cache-Control of the uploaded objects.
        request_budget: A Prefect global concurrency limit shared with other runs: each
            batch holds one slot per request it may have in flight (docs/sharing-s3.md).

    The bounded numbers (workers, batch sizes, retries) are described where they are
    declared, in :mod:`prefect_s3_concurrency.parameters`.
    """
    install_log_redaction()  # before any library logs a request
    start = time.perf_counter()
    url, conn = resolve_location(dest, connection.with_credentials(credentials))
    budget = resolve_budget(request_budget, in_flight_for(engine, requests_in_flight))
    root = source_root(source_dir)
    # Listing the destination proves the bucket is reachable and finds identical objects.
    listed = list_objects_task(conn, url.bucket, url.folder, pool_size=workers)
    existing = {o.key: o for o in listed if skip_existing}
    scan = scan_local_files(
        root, include or (), exclude or (), follow_symlinks=follow_symlinks,
        allow_outside_symlinks=allow_outside_symlinks,
    )  # fmt: skip
    local = scan.files
    check_not_empty(len(local), str(root), fail_if_empty)
    files, rejected = plan_uploads(local, url)
    report_progress.planned()
    summary = TransferSummary(
        direction="upload", source=str(root.resolve()), destination=str(url), dry_run=dry_run,
        rejected={**scan.rejected, **rejected},
    )  # fmt: skip
    progress = RunProgress("upload-progress", f"upload {root} to {url}")
    progress.add_total(len(files))
    lanes = batches_for(engine, workers)  # batch tasks at once (an async engine needs few)
    common = batch_arguments(
        conn, url.bucket, workers, dry_run, engine, requests_in_flight, budget,
        upload_options=upload_options,
    )  # fmt: skip
    cuts = cut_batches(files, lambda f: f.size, batch_max_objects, batch_max_mib * MIB, lanes)
    batches = (
        Batch(
            {**common, "items": quote(b),
             "existing": quote({f.key: existing[f.key] for f in b if f.key in existing})},
            [f.key for f in b], sum(f.size for f in b),
        )
        for b in cuts
    )  # fmt: skip
    with io_runner(lanes, dask_address) as runner:
        result = run_batches(
            runner, retrying(upload_batch, task_retries), "upload", batches, progress,
            lanes * IN_FLIGHT_PER_WORKER, lambda: len(cuts),
        )  # fmt: skip
    _record_result(summary, result)
    summary.failed.update(scan.unreadable)  # never "absent": nothing is deleted after this
    if delete_extra:
        extras = remote_extras(
            listed, url.folder, {f.key for f in files}, include or (), exclude or ()
        )
        if _may_delete(summary, extras, len(local), allow_rejected):
            _record_deletes(summary, delete_objects_task(conn, url.bucket, extras))
    summary.seconds = time.perf_counter() - start
    progress.finish(success=not summary.failed and (allow_rejected or not summary.rejected))
    return _finish(summary, "upload-summary", allow_rejected)


if __name__ == "__main__":
    from prefect_s3_concurrency.cli import main

    raise SystemExit(main())
