"""Run every benchmark module: ``python -m benchmarks [--only NAME ...] [--out-dir DIR]``.

Modules are imported lazily, one at a time; a module that does not exist (yet) is skipped.
Each one's ``run(out_dir)`` prints its own table and writes its files to ``out_dir``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MODULES = ("transfer_suite", "cpu_pipeline")  # transfer_suite runs transfer per workload
CHOICES = ("transfer", *MODULES)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def run_module(name: str, out_dir: Path) -> dict[str, Any] | None:
    """Import ``benchmarks.<name>`` and call its ``run(out_dir)``.

    Returns:
        Its result, or None if the module does not exist.
    """
    qualified = f"{__package__ or 'benchmarks'}.{name}"
    if importlib.util.find_spec(qualified) is None:
        return None
    module = importlib.import_module(qualified)
    return module.run(out_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return 1 if any of them failed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run the project's benchmarks."
    )
    parser.add_argument("--only", nargs="+", choices=CHOICES, help="run only these")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    status: dict[str, str] = {}
    for name in args.only or MODULES:
        print(f"=== benchmark: {name}", flush=True)
        start = time.perf_counter()
        try:
            result = run_module(name, args.out_dir)
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            status[name] = "failed"
            continue
        if result is None:
            print(f"benchmarks/{name}.py not found: skipped")
            status[name] = "skipped (missing)"
        else:
            status[name] = f"ok in {time.perf_counter() - start:.0f}s"
    print("=== summary: " + json.dumps(status))
    return 1 if any(v == "failed" for v in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
