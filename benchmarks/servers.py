"""The S3 servers the transfer benchmark runs against: ``rclone serve s3`` or moto server.

``rclone serve s3`` keeps no checksums beyond the file's MD5 (its ETag); moto server stores
what a client sends (``x-amz-checksum-*``, multipart ETags), as S3 does, but costs more CPU.
Both run as subprocesses bound to 127.0.0.1, so their CPU is measured apart from the client's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prefect_s3_concurrency.runtime.processes import stop_process

SERVERS = ("rclone", "moto")
# The command-line words that find each server among this process's children (CpuMeter).
SERVER_WORDS = {"rclone": ("rclone", "serve", "s3"), "moto": ("moto.server",)}


class MotoS3Server:
    """``python -m moto.server`` on a free 127.0.0.1 port, with LocalS3Server's interface."""

    access_key = "bench-access"
    secret_key = "bench-secret"  # moto accepts any credentials; loopback only
    region = "us-east-1"

    def __init__(self, startup_timeout: float = 60.0) -> None:
        """Configure; :meth:`start` (or ``with``) launches the process."""
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.endpoint_url = ""

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> MotoS3Server:
        """Start moto server and wait until it answers.

        Raises:
            RuntimeError: If it exits or does not answer in time.
        """
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._proc.returncode}")
            try:
                urllib.request.urlopen(self.endpoint_url + "/moto-api/", timeout=2).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("moto server did not answer in time")

    def stop(self) -> None:
        """Terminate the server process."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def client(self, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config_kwargs),
        )  # fmt: skip

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (no error if it exists)."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def env(self) -> dict[str, str]:
        """AWS_* variables pointing SDKs and CLIs at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }  # fmt: skip


def open_server(kind: str, root: Path) -> Any:
    """An unstarted server of ``kind`` (``rclone`` serves ``root``); use it as a context."""
    if kind == "moto":
        return MotoS3Server()
    from prefect_s3_concurrency.s3.local_server import LocalS3Server

    return LocalS3Server(root=root)
