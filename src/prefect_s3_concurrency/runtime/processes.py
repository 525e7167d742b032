"""Child processes: the one way the project stops a server it started."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Terminate ``proc`` if it still runs; kill it after ``grace`` seconds; reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
