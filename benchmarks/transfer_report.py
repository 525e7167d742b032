"""Summaries, the printed table and the bar chart of the transfer benchmark."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from benchmarks.machine import median

DIRECTIONS = ("download", "upload")
CPU_KEYS = ("client_cpu", "s3_server_cpu", "prefect_server_cpu", "other_cpu")
Raw = dict[str, dict[str, list[dict[str, Any]]]]


def summarize(raw: Raw, variants: list[Any], objects: int, nbytes: int) -> dict[str, Any]:
    """Medians over the verified runs, files/s, CPU ms per file and noise; ratios.

    Args:
        raw: ``label -> direction -> runs``; a run with ``error`` is left out of the medians.
        variants: The contenders (with ``label`` and ``tool``), in table order.
        objects: Objects per run.
        nbytes: Bytes per run.
    """
    medians: dict[str, dict[str, dict[str, Any]]] = {}
    for v in variants:
        medians[v.label] = {}
        for d in raw[v.label]:
            runs = [r for r in raw[v.label][d] if "error" not in r]
            walls = [r["wall"] for r in runs]
            wall = median(walls)
            stats: dict[str, Any] = {
                "runs": len(runs),
                "failed_runs": len(raw[v.label][d]) - len(runs),
                "wall_s": round(wall, 4),
                "files_per_s": round(objects / wall, 1) if wall else 0.0,
                "mib_per_s": round(nbytes / 2**20 / wall, 1) if wall else 0.0,
                "min_files_per_s": round(objects / max(walls), 1) if walls else 0.0,
                "max_files_per_s": round(objects / min(walls), 1) if walls else 0.0,
                "cv": round(statistics.pstdev(walls) / wall, 3) if wall else 0.0,
            }
            for key in CPU_KEYS:
                vals = [r[key] for r in runs if key in r]
                if vals:
                    stats[f"{key}_ms_per_file"] = round(median(vals) / objects * 1000, 3)
            flow = [r["flow_seconds"] for r in runs if "flow_seconds" in r]
            if flow:
                stats["flow_internal_s"] = round(median(flow), 4)
            heads = [r["head_requests"] for r in runs if "head_requests" in r]
            if heads:
                stats["head_per_1k_objects"] = round(median(heads) / objects * 1000, 1)
            medians[v.label][d] = stats
    return {"medians": medians, "ratios": ratios(medians, variants)}


def _speedup(medians: dict[str, Any], proj: str, other: str, d: str) -> float | None:
    """How many times faster ``proj`` was than ``other`` (median walls: no rounding)."""
    mine, theirs = medians[proj][d]["wall_s"], medians[other][d]["wall_s"]
    return round(theirs / mine, 3) if mine and theirs else None


def ratios(medians: dict[str, Any], variants: list[Any]) -> dict[str, Any]:
    """Speed of the project (default and best worker count) over every peer.

    Peers are keyed by tool (``baseline``, ``s5cmd``, ``rclone``, ``awscli``): the first
    variant of each tool in table order.
    """
    projects = [v for v in variants if v.tool == "project"]
    if not projects:
        return {}
    default = next((v for v in projects if "(default)" in v.label), projects[0])
    others: list[tuple[Any, str]] = []
    for v in variants:
        if v.tool != "project" and v.tool not in {key for _, key in others}:
            others.append((v, v.tool))
    out: dict[str, Any] = {}
    for d in medians[default.label]:
        best = min(projects, key=lambda v: medians[v.label][d]["wall_s"] or float("inf"))
        entry: dict[str, Any] = {}
        for name, proj in (("default", default), ("best", best)):
            entry[f"project_{name}"] = proj.label
            for other, key in others:
                ratio = _speedup(medians, proj.label, other.label, d)
                if ratio is not None:
                    entry[f"project_{name}_vs_{key}"] = ratio
        entry["each"] = {
            p.label: {
                f"vs_{key}": r
                for o, key in others
                if (r := _speedup(medians, p.label, o.label, d)) is not None
            }
            for p in projects
        }
        out[d] = entry
    return out


def notes(result: dict[str, Any]) -> list[str]:
    """Warnings about failed runs, noisy variants and other processes' CPU use."""
    out = []
    for label, per_dir in result["raw"].items():
        for d, runs in per_dir.items():
            for r in runs:
                if "error" in r:
                    out.append(f"FAILED {label} {d} round {r['round'] + 1}: {r['error']}")
                elif "recheck" in r:
                    out.append(f"{label} {d} round {r['round'] + 1}: {r['recheck']}")
    noisy = [
        f"{label} {d} (cv {s['cv']:.0%})"
        for label, per_dir in result["medians"].items()
        for d, s in per_dir.items()
        if s["cv"] > 0.15
    ]
    if noisy:
        out.append("noisy: " + ", ".join(noisy) + "; consider rerunning on a quieter machine")
    cores = result["machine"]["cpu_count"] or 1
    busy = [
        r["other_cpu"] / r["wall"]
        for per_dir in result["raw"].values() for runs in per_dir.values() for r in runs
        if r.get("wall") and "other_cpu" in r
    ]  # fmt: skip
    if busy:
        out.append(
            f"other processes used a median {median(busy):.2f} of {cores} cores during the runs"
        )
    return out


def format_table(result: dict[str, Any]) -> str:
    """The results as a plain-text table, then the ratios and notes."""
    p = result["params"]
    lines = [
        f"Transfer benchmark: {p['objects']} x {p['size_kib']} KiB objects seeded by "
        f"{p.get('seed', 'direct')}, {p.get('server', 'rclone')} on 127.0.0.1, median of "
        f"{p['repeats']} interleaved rounds; stored: {p.get('seed_stored', {})}",
        f"load average: start {result['machine']['load_average_at_start']}, "
        f"end {result['load_average']}",
        "",
        f"{'variant':<24} {'dir':<8} {'wall s':>7} {'min-max files/s':>16} {'MiB/s':>7} "
        f"{'CPU ms/file: client':>19} {'s3 srv':>7} {'HEAD/1k':>7}",
    ]
    for label, per_dir in result["medians"].items():
        for d, st in per_dir.items():
            heads = st.get("head_per_1k_objects")
            lines.append(
                f"{label:<24} {d:<8} {st['wall_s']:>7.2f} {_range(st):>16} "
                f"{st['mib_per_s']:>7.1f} {st.get('client_cpu_ms_per_file', 0):>19.2f} "
                f"{st.get('s3_server_cpu_ms_per_file', 0):>7.2f} "
                f"{'' if heads is None else f'{heads:.0f}':>7}"
            )
    lines.append("")
    for label, per_dir in result["medians"].items():
        inner = [f"{d} {s['wall_s']:.2f} s wall, {s['flow_internal_s']:.2f} s in the flow"
                 for d, s in per_dir.items() if "flow_internal_s" in s]  # fmt: skip
        if inner:
            lines.append(f"{label:<24} " + "; ".join(inner))
    lines.append("")
    for d, entry in result["ratios"].items():  # (the JSON also names the default and best)
        for label, each in entry.get("each", {}).items():
            parts = [f"{v:.2f}x {k[3:]}" for k, v in each.items()]
            lines.append(f"{d:<8} ratio {label:<24} " + ", ".join(parts))
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def _range(stats: dict[str, Any]) -> str:
    return f"{stats['min_files_per_s']:.0f}-{stats['max_files_per_s']:.0f}"


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
    directions = [d for d in DIRECTIONS if d in result["medians"][labels[0]]]
    for i, d in enumerate(directions):
        stats = [result["medians"][lb][d] for lb in labels]
        xs = [j + (i - 0.5) * width for j in range(len(labels))]
        heights = [s["files_per_s"] for s in stats]
        err = [
            [max(0.0, h - s["min_files_per_s"]) for h, s in zip(heights, stats, strict=True)],
            [max(0.0, s["max_files_per_s"] - h) for h, s in zip(heights, stats, strict=True)],
        ]
        bars = ax.bar(xs, heights, width, yerr=err, capsize=3, label=d)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), [lb.replace(" (", "\n(") for lb in labels], fontsize=8)
    ax.set_ylabel("files/s (median; bars: min-max)")
    p = result["params"]
    ax.set_title(
        f"{p['objects']} x {p['size_kib']} KiB, seeded by {p.get('seed', 'direct')}, "
        f"{p.get('server', 'rclone')} on loopback, "
        f"{p['repeats']} rounds, load avg {result['load_average']}",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
