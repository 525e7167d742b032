"""Benchmarks: ``python -m benchmarks`` (or ``make bench``) runs them all.

Each module exposes ``run(out_dir: Path) -> dict`` and writes its results to ``out_dir``
(``benchmarks/results/`` by default, which git ignores).
"""
