"""The transfer benchmark's contenders: the project per engine and worker count, the seed
baseline, s5cmd, rclone copy and aws-cli."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.transfer_tools import Variant
from prefect_s3_concurrency.s3.engine_registry import ENGINE_MODULES

ENGINES = tuple(ENGINE_MODULES)  # every registered engine


def make_variants(
    workers: Sequence[int],
    default_workers: int,
    baseline_workers: int,
    s5cmd_workers: Sequence[int],
    engines: Sequence[str] = ENGINES,
    compare: tuple[str, str] = ("", ""),
) -> list[Variant]:
    """The contenders: the project per engine and worker count (and, ``compare`` = (package,
    revision) from :mod:`benchmarks.compare`, again as of that revision), the baseline,
    s5cmd, rclone, aws-cli."""
    from prefect_s3_concurrency.s3.engines import resolve_engine

    default_engine = resolve_engine("auto")
    out = [
        Variant(
            "project",
            w,
            f"{e} w{w}" + (" (default)" if (w, e) == (default_workers, default_engine) else ""),
            engine=e,
        )  # fmt: skip
        for e in engines
        for w in sorted(set(workers) | {default_workers})
    ]
    if compare[0]:
        out += [Variant("project", v.workers, f"{v.engine} w{v.workers} @{compare[1]}",
                        engine=v.engine, package=compare[0]) for v in list(out)]  # fmt: skip
    out.append(Variant("baseline", baseline_workers, f"baseline w{baseline_workers}"))
    out += [
        Variant("s5cmd", w, f"s5cmd w{w}" if w else "s5cmd (default 256)") for w in s5cmd_workers
    ]
    out.append(Variant("rclone", 0, "rclone copy (default 4)"))
    out.append(Variant("awscli", 0, "aws-cli v1"))
    return out
