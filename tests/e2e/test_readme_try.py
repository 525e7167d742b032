"""The README's local try, run verbatim: ``make demo`` on a fresh PREFECT_HOME, then the
``local-s3`` + ``cp`` commands (the demo is made small through DEMO_ARGS, and the first
command's local Prefect server is stopped at the end)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prefect_s3_concurrency.runtime.prefect_server import stop_server

ROOT = Path(__file__).resolve().parents[2]


def try_it_blocks() -> list[list[str]]:
    """The command lines of the shell blocks of the README's "Try it locally" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it locally", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip()]
            for b in blocks]  # fmt: skip


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_readme_local_try_runs_verbatim_on_a_fresh_prefect_home(tmp_path) -> None:
    (demo,), (serve, *commands) = try_it_blocks()
    assert demo == "make demo" and serve.startswith("prefect-s3 local-s3 ")
    port = int(serve.split("--port ")[1].split()[0])
    if _listening(port):
        pytest.skip(f"port {port} of the README's example is in use")
    for name in ("Makefile", "pyproject.toml", "flows", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    env.update(PREFECT_HOME=str(home), DEMO_ARGS="--files 6 --objects 4",
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}")  # fmt: skip
    try:
        made = subprocess.run(demo, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=400)  # fmt: skip
        assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
        assert "demo OK" in made.stdout
        assert "starting a local Prefect server for the first time" in made.stderr
        # A session of its own: the shell may fork rather than exec, so stopping only the shell
        # would leave prefect-s3 and its rclone running (they did, on port 9123).
        server = subprocess.Popen(serve, shell=True, cwd=tmp_path, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (tmp_path / "local-s3.env").exists():
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)  # polling for the file the server writes once it answers
            script = "set -e\n" + "\n".join(commands)
            ran = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the shell, prefect-s3 and rclone
            server.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _listening(port):  # nothing of the example outlives it
            assert time.monotonic() < deadline, f"the example's S3 server still listens on {port}"
            time.sleep(0.1)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert (tmp_path / "copy" / "demo.py").read_bytes() == (ROOT / "flows/demo.py").read_bytes()
    finally:
        stop_server(home)
