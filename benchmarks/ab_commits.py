"""Two checkouts of the project, interleaved: the same flows on the same S3 server and Prefect API.

``python -m benchmarks.ab_commits --old /work/ab-old --new /work/ab-new [--rounds 5]``
(``--extra NAME=PATH`` adds checkouts, e.g. to bisect; ``--only 1000x64KiB:download`` one case)

Each checkout has its own ``.venv``. One ``rclone serve s3`` and one temporary Prefect API are
shared; the source objects are seeded once by boto3 (``upload_file``: multipart, 8 MiB parts).
Each run is a fresh ``<checkout>/.venv/bin/python -c RUN`` that imports that checkout's flow
and times only the flow call (default engine and workers; heartbeats off, as the CLI runs).
Rounds alternate the order (old, new, then new, old) so that drift on a shared machine hits
all alike; the load average is recorded at each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.machine import load_average
from benchmarks.seeding import write_local
from benchmarks.servers import open_server
from benchmarks.transfer_context import prefect_api, restored_environ
from benchmarks.transfer_tools import delete_prefix, verify_download, verify_upload

BUCKET = "ab-bench"
WORKLOADS = {"1000x64KiB": (1000, 64 * 1024), "4x64MiB": (4, 64 * 2**20)}
DIRECTIONS = ("download", "upload")

# Runs in the checkout's venv, from a neutral directory: only its installed package is seen.
RUN = """
import json, sys, time
import prefect_s3_concurrency as pkg
from prefect_s3_concurrency import S3Connection, download_prefix, upload_directory
try:
    from prefect_s3_concurrency.cli.run import local_run_settings
except ImportError:  # the layout before the move
    from prefect_s3_concurrency.cli_run import local_run_settings
a = json.loads(sys.argv[1])
conn = S3Connection(endpoint_url=a["endpoint"], region=a["region"])
with local_run_settings():
    t0, c0 = time.perf_counter(), time.process_time()
    if a["direction"] == "download":
        s = download_prefix(source=a["s3"], dest_dir=a["local"], connection=conn)
    else:
        s = upload_directory(source_dir=a["local"], dest=a["s3"], connection=conn)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "flow_seconds": s.seconds,
                  "objects": s.objects, "failed": len(s.failed), "package": pkg.__file__}))
"""


def run_once(checkout: Path, args: dict[str, Any], env: dict[str, str], cwd: Path) -> dict:
    """One flow run of ``checkout`` in a new process; its JSON line plus the load average."""
    load = load_average()
    proc = subprocess.run(
        [str(checkout / ".venv/bin/python"), "-c", RUN, json.dumps(args)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode:
        raise RuntimeError(f"{checkout}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["package"].startswith(str(checkout) + "/"):
        raise RuntimeError(f"{checkout} imported {out['package']}")
    return {**out, "load_before": load, "load_after": load_average()}


def seed(server: Any, work: Path) -> dict[str, Any]:
    """Write each workload's files and upload them by boto3 to ``s3://ab-bench/<workload>/``."""
    client, expected = server.client(request_checksum_calculation="when_required"), {}
    for name, (count, size) in WORKLOADS.items():
        expected[name] = write_local(work / "src" / name, count, size)
        files = [(str(p), f"{name}/{p.name}") for p in sorted((work / "src" / name).iterdir())]
        with ThreadPoolExecutor(8) as pool:  # default TransferConfig: 8 MiB parts above 8 MiB
            list(pool.map(lambda f: client.upload_file(f[0], BUCKET, f[1]), files))
    return expected


def one_run(ver: str, checkout: Path, workload: str, direction: str, ctx: dict[str, Any]) -> dict:
    """Run, verify, clean up (untimed); return the record."""
    work, server, expected, n = ctx["work"], ctx["server"], ctx["expected"], ctx["n"]
    ctx["n"] += 1
    base = {"endpoint": server.endpoint_url, "region": server.region, "direction": direction}
    if direction == "download":
        dest = work / f"dl-{n}"
        args = {**base, "s3": f"s3://{BUCKET}/{workload}/", "local": str(dest)}
        out = run_once(checkout, args, ctx["env"], work)
        verify_download(dest, expected[workload])
        shutil.rmtree(dest)
    else:
        prefix = f"up-{n}/"
        args = {**base, "s3": f"s3://{BUCKET}/{prefix}", "local": str(work / "src" / workload)}
        out = run_once(checkout, args, ctx["env"], work)
        verify_upload(server.client(), BUCKET, prefix, expected[workload])
        delete_prefix(server.client(), BUCKET, prefix)
    return {"version": ver, "workload": workload, "direction": direction, **out}


def summarise(runs: list[dict[str, Any]], cases: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per case: median (min-max) seconds of each version and its ratio to old's median."""
    rows = []
    for workload, direction in cases:
        row: dict[str, Any] = {"workload": workload, "direction": direction}
        for ver in dict.fromkeys(r["version"] for r in runs):
            secs = [r["seconds"] for r in runs if (r["version"], r["workload"],
                    r["direction"]) == (ver, workload, direction)]  # fmt: skip
            row[ver] = {"median": statistics.median(secs), "min": min(secs),
                        "max": max(secs), "n": len(secs)}  # fmt: skip
            row[ver]["ratio_to_old"] = row[ver]["median"] / row["old"]["median"]
        row["ratio"] = row["new"]["ratio_to_old"]
        row["over_10pct_slower"] = row["ratio"] > 1.10
        rows.append(row)
    return rows


def main() -> None:
    """Parse arguments, set up the shared servers, run the rounds, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extra", nargs="*", default=[], help="more checkouts, NAME=PATH")
    parser.add_argument("--only", nargs="*", help="cases WORKLOAD:DIRECTION (default: all)")
    parser.add_argument("--out", type=Path, default=Path("ab-commits.json"))
    a = parser.parse_args()
    versions = {"old": a.old.resolve(), "new": a.new.resolve()}
    versions.update({k: Path(v).resolve() for k, v in (e.split("=", 1) for e in a.extra)})
    cases = [tuple(c.split(":")) for c in a.only or []] or [
        (w, d) for w in WORKLOADS for d in DIRECTIONS
    ]
    work = Path(tempfile.mkdtemp(prefix="ab-commits-"))
    started, runs = time.time(), []
    try:
        with restored_environ(), open_server("rclone", work / "s3") as server:
            os.environ.update(server.env())
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            server.create_bucket(BUCKET)
            expected = seed(server, work)
            with prefect_api(False) as api_url:
                env = {**os.environ, "PREFECT_API_URL": api_url,
                       "PREFECT_HOME": str(work / "prefect-home")}  # fmt: skip
                ctx = {"work": work, "server": server, "expected": expected, "env": env, "n": 0}
                for ver, checkout in versions.items():  # warm-up: registers the flows, untimed
                    for direction in DIRECTIONS:
                        one_run(ver, checkout, "1000x64KiB", direction, ctx)
                for rnd in range(a.rounds):
                    order = list(versions)[:: 1 if rnd % 2 == 0 else -1]
                    for workload, direction in cases:
                        for ver in order:
                            rec = one_run(ver, versions[ver], workload, direction, ctx)
                            runs.append({"round": rnd, **rec})
                            print(json.dumps(runs[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"versions": {k: str(v) for k, v in versions.items()}, "rounds": a.rounds,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "duration_s": round(time.time() - started, 1), "summary": summarise(runs, cases),
              "runs": runs}  # fmt: skip
    a.out.write_text(json.dumps(result, indent=1))
    for row in result["summary"]:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
