"""Helpers for the reliability tests: digests of trees and buckets, Prefect run facts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_s3_concurrency.local.links import DownloadPlanner
from prefect_s3_concurrency.local.paths import is_partial_name
from prefect_s3_concurrency.s3.records import S3Object


def tree_digests(root: Path) -> dict[str, str]:
    """``relative posix path -> sha256`` of every regular file under ``root`` (temp files too)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def partials(root: Path) -> list[Path]:
    """This project's temp files under ``root``."""
    return [p for p in root.rglob("*") if is_partial_name(p.name)]


def bucket_digests(client: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """``key relative to prefix -> sha256`` of every object, read directly (no proxy)."""
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) :]] = hashlib.sha256(body).hexdigest()
    return out


def digests_of(files: dict[str, bytes]) -> dict[str, str]:
    """``name -> sha256`` of in-memory files."""
    return {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def task_retries(flow_run_id: UUID) -> int:
    """Prefect task retries made in a flow run (sum of ``run_count - 1`` over its task runs)."""

    async def read() -> int:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return sum(max(0, r.run_count - 1) for r in runs)

    return run_coro_as_sync(read())


def flow_logs(flow_run_id: UUID) -> list[str]:
    """Messages the Prefect API stored for a flow run (its task runs included)."""
    APILogWorker.drain_all(timeout=10)  # logs are sent in the background: wait for them

    async def read() -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        return [log.message for log in logs]

    return run_coro_as_sync(read())


def plan_downloads(
    objects: list[S3Object], folder: str, dest: Path
) -> tuple[list[tuple[S3Object, str]], dict[str, str]]:
    """Plan a whole listing as the download flow does page by page: pairs, rejected keys."""
    planner = DownloadPlanner(folder, dest)
    items, rejected = planner.plan(objects)
    linked, refused = planner.finish()
    return items + linked, {**rejected, **refused}
