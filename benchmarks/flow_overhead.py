"""A flow run's fixed cost: download-prefix of one small object vs a trivial one-task flow.

Both run in this process under one Prefect API (a temporary server, or ``--prefect-from-env``),
interleaved round by round; the difference of the medians is what a transfer flow run costs
beyond what any Prefect flow run with one task costs. ``python -m benchmarks.flow_overhead``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from benchmarks.transfer_context import prefect_api, quiet_console


@task
def _one_task() -> int:
    return 1


@flow(name="trivial-one-task")
def trivial() -> int:
    """The reference: one flow run with one task, nothing else."""
    return _one_task.submit().result()


def _rounds(endpoint: str, keys: Any, bucket: str, rounds: int, tmp: Path) -> dict[str, Any]:
    from prefect_s3_concurrency import download_prefix
    from prefect_s3_concurrency.s3.connection import S3Connection

    conn = S3Connection(endpoint_url=endpoint).with_credentials(keys)
    walls: dict[str, list[float]] = {"trivial": [], "download-prefix": []}
    for i in range(rounds):
        order = ["trivial", "download-prefix"][:: 1 if i % 2 == 0 else -1]
        for name in order:
            start = time.perf_counter()
            if name == "trivial":
                trivial()
            else:
                dest = tmp / f"d{i}"
                summary = download_prefix(f"s3://{bucket}/one/", str(dest), connection=conn)
                if summary.objects != 1 or not (dest / "a.txt").is_file():
                    raise RuntimeError(f"download-prefix did not download the object: {summary}")
            walls[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(v) for name, v in walls.items()}
    return {"walls_s": walls, "medians_s": medians,
            "fixed_cost_s": medians["download-prefix"] - medians["trivial"],
            "load_avg": os.getloadavg()}  # fmt: skip


def main() -> None:
    """Run the comparison and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prefect-from-env", action="store_true")
    args = parser.parse_args()
    from prefect_aws import AwsCredentials

    from prefect_s3_concurrency.s3.local_server import LocalS3Server

    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalS3Server() as server,
        prefect_api(args.prefect_from_env),
        quiet_console(True),
    ):
        client = server.client()
        client.create_bucket(Bucket="overhead")
        client.put_object(Bucket="overhead", Key="one/a.txt", Body=b"1\n")
        keys = AwsCredentials(
            aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key
        )
        trivial()  # warm: the first run of a process registers the flows
        _rounds(server.endpoint_url, keys, "overhead", 1, Path(tmp) / "warm")
        out = _rounds(server.endpoint_url, keys, "overhead", args.rounds, Path(tmp))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
