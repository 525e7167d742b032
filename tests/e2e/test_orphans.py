"""Nothing outlives a command-line run killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_s3_concurrency.runtime.watchdog import descendants, process_stat

REPO = Path(__file__).resolve().parents[2]
_stat = process_stat  # (ppid, start time) of a live process, None once it is gone


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _poll(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while (value := probe()) is None or value is False:
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)
    return value


def test_sigkilled_cli_run_leaves_no_process(
    rclone_s3, bucket_factory, local_prefect_home, tmp_path
) -> None:
    """The run squares with the registered test transform ``hang`` (blocks forever), so it
    is mid-run when killed: both pool workers and the watchdog are alive. The local Prefect
    server it reports to is started first: it is meant to outlive runs (and is stopped with
    the session), so it is not the run's to take down."""
    from prefect_s3_concurrency.runtime.prefect_server import ensure_server

    ensure_server(local_prefect_home)
    client = rclone_s3.client()
    src, dst = bucket_factory(rclone_s3, "in"), bucket_factory(rclone_s3, "out")
    for i in range(4):
        client.put_object(Bucket=src, Key=f"in/{i}.txt", Body=b"1\n2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(rclone_s3.env())
    env.update(
        PREFECT_HOME=str(local_prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_S3_TRANSFORMS="hang=pipeline_transforms:hang",
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")]),
    )  # fmt: skip
    cmd = [
        sys.executable, "flows/pipeline.py", "square", f"s3://{src}/in",
        f"s3://{dst}/out", "--transform", "hang", "--min-process-mib", "0", "--cpu-workers",
        "2", "--scratch-dir", str(tmp_path),
    ]  # fmt: skip
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
    seen: dict[int, int] = {}
    try:

        def busy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended early: {(tmp_path / 'run.log').read_text()}")
            seen.update(descendants(proc.pid))
            lines = [_cmdline(p) for p in seen]
            workers = sum("spawn_main" in c for c in lines)
            return workers >= 2

        try:
            _poll(busy, 120, "the run never had two pool workers")
        except TimeoutError:
            lines = [_cmdline(p) for p in seen]
            pytest.fail(f"no two pool workers: {lines}\n{(tmp_path / 'run.log').read_text()}")
        assert proc.poll() is None, "the run ended before it was killed"
        seen.update(descendants(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        def alive() -> dict[int, str]:
            return {p: _cmdline(p) for p, t in seen.items() if (_stat(p) or (0, -1))[1] == t}

        killed_at, before = time.monotonic(), len(seen)
        try:
            _poll(lambda: not alive(), 8, "orphans")
        except TimeoutError:
            pytest.fail(f"still alive 8 s after SIGKILL: {alive()}")
        print(  # figures for the README's reliability table (pytest -s)
            f"\nKILL FIGURES processes under the run: {before}, orphans: 0, all gone "
            f"{time.monotonic() - killed_at:.1f} s after SIGKILL"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, start in seen.items():  # never leak into the rest of the suite
            if (_stat(pid) or (0, -1))[1] == start:
                os.kill(pid, signal.SIGKILL)
        log.close()
