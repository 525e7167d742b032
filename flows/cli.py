"""Run a flow file as a script: ``python flows/transfer.py cp s3://bucket/raw ./raw``.

The command line is ``prefect-s3``'s (:mod:`prefect_s3_concurrency.cli`); this module keeps
the flow files' ``if __name__ == "__main__"`` blocks and older imports working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect_s3_concurrency.cli.run import local_run_settings

__all__ = ["local_run_settings", "run_cli"]


def run_cli(*flows: Any, argv: Sequence[str] | None = None) -> None:
    """Run ``prefect-s3`` with ``argv`` (default ``sys.argv[1:]``) and exit with its code.

    Args:
        *flows: The flows of the calling script (kept for compatibility; every ``prefect-s3``
            subcommand is available).
        argv: The command line, without the program name.
    """
    from prefect_s3_concurrency.cli import main

    raise SystemExit(main(argv))
