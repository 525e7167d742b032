"""Machine description and CPU accounting for benchmarks (Linux ``/proc``; degrades elsewhere).

CPU seconds are a useful second metric next to wall time on a shared machine: they barely
move when other processes compete for the cores, while wall time does.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages (empty if unavailable)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(packages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Describe the machine, the interpreter and the given packages' versions."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "load_average_at_start": load_average(),
        "packages": versions,
    }


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; 0.0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def _system_busy() -> float:
    """CPU seconds all cores spent busy since boot (from ``/proc/stat``); 0.0 if unknown."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def children_by_role(roles: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Find this process's direct children whose command line contains all given words.

    Args:
        roles: ``role -> words``, e.g. ``{"s3_server": ("rclone", "serve")}``.

    Returns:
        ``role -> pid`` for the roles found.
    """
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    found: dict[str, int] = {}
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for role, words in roles.items():
            if role not in found and all(w in cmd for w in words):
                found[role] = pid
    return found


@dataclass
class CpuSample:
    """CPU clocks at one instant: this process, waited-for children, helpers, whole system."""

    wall: float
    self_cpu: float
    children_cpu: float
    helpers: dict[str, float] = field(default_factory=dict)
    system_busy: float = 0.0


class CpuMeter:
    """Measures wall time and the CPU seconds of this process, its helpers and the rest."""

    def __init__(self, helper_pids: dict[str, int] | None = None) -> None:
        """Remember which helper processes (e.g. the S3 server) to account separately."""
        self.helper_pids = dict(helper_pids or {})

    def sample(self) -> CpuSample:
        """Read all clocks now."""
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return CpuSample(
            wall=time.perf_counter(),
            self_cpu=time.process_time(),
            children_cpu=kids.ru_utime + kids.ru_stime,
            helpers={role: _proc_cpu(pid) for role, pid in self.helper_pids.items()},
            system_busy=_system_busy(),
        )

    @staticmethod
    def delta(start: CpuSample, end: CpuSample) -> dict[str, float]:
        """Wall and CPU seconds between two samples.

        ``client_cpu`` is this process plus the subprocesses it waited for; ``other_cpu`` is
        the busy CPU time of everything else on the machine (other users' work: noise).
        """
        out = {
            "wall": end.wall - start.wall,
            "client_cpu": (end.self_cpu - start.self_cpu) + (end.children_cpu - start.children_cpu),
        }
        for role, value in end.helpers.items():
            out[f"{role}_cpu"] = value - start.helpers.get(role, value)
        ours = sum(v for k, v in out.items() if k.endswith("_cpu"))
        busy = end.system_busy - start.system_busy
        out["other_cpu"] = max(0.0, busy - ours) if busy else 0.0
        return {k: round(v, 4) for k, v in out.items()}


def median(values: list[float]) -> float:
    """Median of ``values`` (0.0 for an empty list)."""
    return statistics.median(values) if values else 0.0


def wait_for_quiet(meter: CpuMeter, max_cores: float, timeout: float, window: float = 1.0) -> float:
    """Wait until other processes use fewer than ``max_cores`` cores, or ``timeout`` passes.

    Args:
        meter: Accounts this process and its helpers, which are not counted as "other".
        max_cores: Busy cores of other processes that count as quiet.
        timeout: Most seconds to wait (0: measure once and return).
        window: Seconds per measurement.

    Returns:
        The other processes' busy cores in the last window.
    """
    deadline = time.monotonic() + timeout
    while True:
        start = meter.sample()
        time.sleep(window)
        delta = CpuMeter.delta(start, meter.sample())
        busy = delta["other_cpu"] / delta["wall"]
        if busy < max_cores or time.monotonic() >= deadline:
            return round(busy, 2)
