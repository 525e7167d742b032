"""Run one download-prefix over a seeded prefix and print figures as JSON (used by test_scale).

Run in its own process so that its peak RSS is the flow process's alone:
``python tests/scale_run.py s3://bucket/prefix DEST`` with the endpoint and keys in the
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).
"""

from __future__ import annotations

import json
import resource
import sys
import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_s3_concurrency import S3Connection, download_prefix


def count_task_runs(flow_run_id: object) -> int:
    """Task runs of a flow run, read in pages of 200 (the API's largest page)."""

    async def read() -> int:
        total = 0
        async with get_client() as client:
            while True:
                page = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                    limit=200,
                    offset=total,
                )
                total += len(page)
                if len(page) < 200:
                    return total

    return run_coro_as_sync(read())


def main() -> None:
    source, dest = sys.argv[1:3]
    start = time.perf_counter()
    state = download_prefix(source, dest, connection=S3Connection(), return_state=True)
    seconds = time.perf_counter() - start
    summary = state.result()
    figures = {
        "objects": summary.objects,
        "failed": len(summary.failed),
        "seconds": round(seconds, 2),
        "objects_per_second": round(summary.objects / seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "task_runs": count_task_runs(state.state_details.flow_run_id),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
