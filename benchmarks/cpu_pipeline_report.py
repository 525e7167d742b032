"""Table, notes and chart for the CPU-stage and pipeline benchmark (``cpu_pipeline.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLAIN_SHARE_TARGET = 0.95  # ProcessPoolTaskRunner's speed-up / a plain ProcessPoolExecutor's
PIPELINE_TARGETS = {False: 0.9, True: 0.7}  # pipeline wall / its stages in sequence (link?)


def _other_cores(records: list[dict[str, Any]]) -> float:
    """Mean busy cores of other processes during ``records``."""
    wall = sum(r.get("wall", 0.0) for r in records)
    return sum(r.get("other_cpu", 0.0) for r in records) / wall if wall else 0.0


def _where(pipe: dict[str, Any]) -> str:
    link = pipe.get("link_mib_s") or 0
    return f"{link:g} MiB/s link" if link else "bare loopback"


def notes(result: dict[str, Any]) -> list[str]:
    """Plain-language findings: targets met or missed, noise, sanity checks."""
    out: list[str] = []
    cpu = result.get("cpu_stage")
    if cpu:
        out += _cpu_notes(cpu)
    for pipe in result.get("pipeline") or []:
        if pipe.get("ratio") is None:
            continue
        target = PIPELINE_TARGETS[bool(pipe.get("link_mib_s"))]
        verdict = "meets" if pipe["ratio"] <= target else "misses"
        ratios = [
            p["wall_s"] / s["wall_s"]
            for p, s in zip(pipe["raw"]["pipeline"], pipe["raw"]["one after another"], strict=True)
        ]
        out.append(
            f"{_where(pipe)}: pipeline {pipe['pipeline_s']:.2f} s vs {pipe['stages_sum_s']:.2f} s "
            f"for the stages one after another: {pipe['ratio']:.2f}x ({verdict} the "
            f"{target}x target; rounds {min(ratios):.2f}-{max(ratios):.2f}x)"
        )
        if not all(r.get("outputs_match_stages") for r in pipe["raw"]["pipeline"]):
            out.append("WARNING: pipeline outputs differ from the one-after-another outputs")
        records = [r for runs in pipe["raw"].values() for r in runs]
        out.append(f"other processes used {_other_cores(records):.2f} cores during that part")
    return out


def _cpu_notes(cpu: dict[str, Any]) -> list[str]:
    """Findings of part 1: the process runner's share of the plain executor's speed-up."""
    out: list[str] = []
    speed, share = cpu["speedup_vs_serial"], cpu.get("share_of_plain_speedup", {})
    pptr = next(k for k in speed if k.startswith("ProcessPoolTaskRunner") and "1 " not in k)
    plain = next(k for k in speed if k.startswith("ProcessPoolExecutor"))
    if share:
        low, high = cpu["share_of_plain_min_max"][pptr]
        verdict = "meets" if share[pptr] >= PLAIN_SHARE_TARGET else "misses"
        out.append(
            f"{pptr}: {speed[pptr]:.2f}x over serial once its workers are up, "
            f"{share[pptr]:.3f} of the plain executor's {speed[plain]:.2f}x (rounds "
            f"{low:.3f}-{high:.3f}; {verdict} the {PLAIN_SHARE_TARGET} target)"
        )
        startup = cpu["startup_s"]
        with_start = cpu["speedup_with_startup"]
        out.append(
            f"worker start-up: {startup[pptr]:.2f} s for {pptr}, {startup[plain]:.2f} s for the "
            f"plain executor; start-up included, {with_start[pptr]:.2f}x vs "
            f"{with_start[plain]:.2f}x"
        )
    threads = next((v for k, v in speed.items() if k.startswith("ThreadPool")), None)
    if threads:
        out.append(f"ThreadPoolTaskRunner (GIL): {threads:.2f}x over serial")
    if cpu["serial_s"] < 20:
        out.append(f"serial workload took {cpu['serial_s']:.1f} s, under the 20 s asked for")
    records = [r for runs in cpu["raw"].values() for r in runs]
    if not all(r.get("outputs_match_serial") for r in records):
        out.append("WARNING: some CPU-stage outputs differ from the serial run")
    out.append(f"other processes used {_other_cores(records):.2f} cores during part 1")
    return out


def format_table(result: dict[str, Any]) -> str:
    """Render the results as a plain-text table."""
    lines = []
    cpu = result.get("cpu_stage")
    if cpu:
        lines.append(
            f"\nCPU stage: {cpu['files']} files, {cpu['input_mib']:.0f} MiB, "
            f"{cpu['chunks']} chunks (serial {cpu['serial_s']:.1f} s)"
        )
        lines.append(
            f"  {'variant':<44} {'start s':>8} {'median s':>9} {'vs serial':>10} "
            f"{'of plain':>9} {'best s':>7} {'vs':>6}"
        )
        for name, secs in cpu["stage_s"].items():
            best = cpu.get("best_s", {}).get(name, secs)
            lines.append(
                f"  {name:<44} {cpu.get('startup_s', {}).get(name, 0):>8.2f} {secs:>9.2f} "
                f"{cpu['speedup_vs_serial'][name]:>9.2f}x "
                f"{cpu.get('share_of_plain_speedup', {}).get(name, 0):>9.3f} {best:>7.2f} "
                f"{cpu.get('best_speedup_vs_serial', {}).get(name, 0):>5.2f}x"
            )
    for pipe in result.get("pipeline") or []:
        st = pipe["stage_medians_s"]
        lines.append(
            f"\npipeline ({_where(pipe)}): {pipe['objects']} objects, "
            f"{pipe['input_mib']:.0f} MiB in"
            f"\n  stages one after another: download {st['download_s']:.2f} + square "
            f"{st['square_s']:.2f} + upload {st['upload_s']:.2f} = {pipe['stages_sum_s']:.2f} s"
            f"\n  square-objects pipeline:  {pipe['pipeline_s']:.2f} s "
            f"({pipe['ratio']:.2f}x the sum)"
        )
    lines.append("\nnotes:")
    lines += [f"  - {n}" for n in result.get("notes", [])]
    lines.append(f"  - load average at start {result['machine']['load_average_at_start']}, "
                 f"at end {result.get('load_average')}")  # fmt: skip
    return "\n".join(lines)


def write_chart(result: dict[str, Any], path: Path) -> bool:
    """Write a two-panel PNG (matplotlib Agg); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    cpu = result.get("cpu_stage")
    if not cpu:
        left.axis("off")
    else:
        names = list(cpu["stage_s"])
        secs = [cpu["stage_s"][n] for n in names]
        bars = left.barh(range(len(names)), secs, color="tab:blue")
        labels = [
            f"{s:.1f} s ({cpu['speedup_vs_serial'][n]:.2f}x)"
            for n, s in zip(names, secs, strict=True)
        ]
        left.bar_label(bars, labels=labels, fontsize=8, padding=3)
        left.set_yticks(range(len(names)), names, fontsize=8)
        left.invert_yaxis()
        left.set_xlabel("seconds (lower is better)")
        left.set_xlim(0, max(secs) * 1.35)
        left.set_title(f"CPU stage: {cpu['input_mib']:.0f} MiB, {cpu['chunks']} chunks", fontsize=9)
    for n, pipe in enumerate(result.get("pipeline") or []):
        st, x = pipe["stage_medians_s"], 2.5 * n
        bottom = 0.0
        for stage, color in (("download_s", "tab:green"), ("square_s", "tab:orange"),
                             ("upload_s", "tab:purple")):  # fmt: skip
            label = stage[:-2] if n == 0 else None
            right.bar(x, st[stage], bottom=bottom, color=color, label=label)
            bottom += st[stage]
        right.bar(x + 1, pipe["pipeline_s"], color="tab:blue", label="pipeline" if n == 0 else None)
        right.text(x + 1, pipe["pipeline_s"], f"{pipe['ratio']:.2f}x", ha="center", va="bottom")
        right.text(x + 0.5, -0.08, _where(pipe), ha="center", va="top", fontsize=8,
                   transform=right.get_xaxis_transform())  # fmt: skip
    if result.get("pipeline"):
        right.set_xticks([])
        right.set_ylabel("seconds: stages one after another (stacked) vs pipeline")
        right.legend(fontsize=8)
        right.set_title("end to end via rclone serve s3", fontsize=9)
    fig.suptitle(f"load average {result.get('load_average')}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
