"""The transfer benchmark over the issue's workloads, and one table of ratios for the README.

``python -m benchmarks.transfer_suite [--only NAME ...]`` runs :mod:`benchmarks.transfer`
once per workload (every engine through the flows, the seed baseline and s5cmd, interleaved,
medians) and writes ``transfer-<name>.json``/``.png`` per workload plus
``transfer-suite.json`` and ``transfer-suite.md`` (the README table) to the output directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import transfer

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# name -> transfer.run() arguments
WORKLOADS: dict[str, dict[str, Any]] = {
    "1k-64KiB": {"objects": 1000, "size_kib": 64, "repeats": 5},
    # large objects as users get them: s5cmd's 50 MiB parts, both directions (the issue's
    # data set); the other seeding styles download only (uploads do not depend on them)
    "4x256MiB-s5cmd": {"objects": 4, "size_kib": 256 * 1024, "repeats": 5, "seed_style": "s5cmd"},
    **{
        f"4x256MiB-{style}": {
            "objects": 4,
            "size_kib": 256 * 1024,
            "repeats": 2,
            "seed_style": style,
            "directions": ("download",),
        }
        for style in ("boto3", "boto3-crc64", "project")
    },
    "wan20ms-1k-64KiB": {"objects": 1000, "size_kib": 64, "repeats": 2, "wan_rtt_ms": 20.0},
    # one round of the default engine against the fast peers (the slow contenders took
    # 50-90 s a direction here): keeps make bench near 30 minutes
    "10k-64KiB": {
        "objects": 10000,
        "size_kib": 64,
        "repeats": 1,
        "engines": ("obstore",),
        "tools": ("project", "s5cmd", "rclone"),
    },  # fmt: skip
}
COMMON = {"workers": (16,), "s5cmd_workers": (0,)}


def _rows(name: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows (one per contender and direction) of one workload's medians."""
    rows = []
    ratios = result["ratios"]
    for label, per_dir in result["medians"].items():
        for d, m in per_dir.items():
            each = ratios.get(d, {}).get("each", {}).get(label, {})
            vs = ", ".join(f"{v:.2f}x {k[3:]}" for k, v in each.items())
            rows.append(
                f"| {name} | {d} | {label} | {m['files_per_s']:.0f} | {m['mib_per_s']:.0f} | "
                f"{m.get('client_cpu_ms_per_file', 0):.2f} | {vs} |"
            )
    return rows


def table(results: dict[str, dict[str, Any]]) -> str:
    """The README table over every workload run."""
    lines = [
        "| workload | direction | contender | files/s | MiB/s | client CPU ms/file "
        "| vs each peer |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        lines += _rows(name, result)
    loads = {n: r["machine"]["load_average_at_start"] for n, r in results.items()}
    lines.append("")
    lines.append("Load average at the start of each workload: " + json.dumps(loads))
    return "\n".join(lines)


def run(
    out_dir: Path = DEFAULT_OUT,
    only: list[str] | None = None,
    table_only: bool = False,
    server: str = "rclone",
    quick: bool = False,
) -> dict[str, Any]:
    """Run the selected workloads (or, ``table_only``, read their JSON); write the table.

    ``quick``: a smoke run: 8 objects (2 x 16 MiB for large workloads), one round.
    """
    results: dict[str, dict[str, Any]] = {}
    for name, args in WORKLOADS.items():
        if only and name not in only:
            continue
        if table_only:
            path = out_dir / f"transfer-{name}.json"
            if path.exists():
                results[name] = json.loads(path.read_text())
            continue
        args = {**args, "server_kind": server}
        if server != "rclone" and args.get("seed_style", "direct") == "direct":
            args["seed_style"] = "boto3"
        if quick:
            big = args["size_kib"] > 1024
            args.update(objects=2 if big else 8, size_kib=16384 if big else 64, repeats=1)
        print(f"--- workload {name}: {args}", flush=True)
        results[name] = transfer.run(out_dir, **COMMON, **args, tag=name)  # type: ignore[arg-type]
    md = table(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "transfer-suite.md").write_text(md + "\n")
    summary = {n: {"ratios": r["ratios"], "medians": r["medians"]} for n, r in results.items()}
    (out_dir / "transfer-suite.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(md)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transfer_suite")
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS))
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table-only", action="store_true", help="table from existing JSON")
    parser.add_argument("--server", choices=("rclone", "moto"), default="rclone")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 round")
    args = parser.parse_args(argv)
    run(args.out_dir, args.only, args.table_only, args.server, args.quick)


if __name__ == "__main__":
    main()
