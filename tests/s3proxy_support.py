"""Fixtures and helpers of the s3proxy tests: one proxy per upstream (rclone, moto) for a
module, boto3 clients through it, error and digest helpers."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from s3proxy import S3Proxy

MiB = 2**20
REPO = Path(__file__).resolve().parents[1]
SESSION = boto3.session.Session()  # one session: clients are quicker to make


@pytest.fixture(scope="session")
def prefect_harness() -> None:
    """No Prefect API for these tests (they run no flow): saves its start-up."""


@pytest.fixture(scope="module", params=["rclone", "moto"])
def upstream(request: pytest.FixtureRequest) -> Any:
    """The upstream server (rclone serve s3, or moto)."""
    return request.getfixturevalue("rclone_s3" if request.param == "rclone" else "moto_server")


@pytest.fixture(scope="module")
def proxy(upstream: Any) -> Iterator[S3Proxy]:
    """One proxy in front of ``upstream``; tests set its rules."""
    with S3Proxy(upstream.endpoint_url, credentials=_secrets(upstream)) as p:
        yield p


@pytest.fixture
def rclone_proxy(rclone_s3: Any) -> Iterator[S3Proxy]:
    """A proxy in front of rclone alone (for tests that need one upstream only)."""
    with S3Proxy(rclone_s3.endpoint_url, credentials=_secrets(rclone_s3)) as p:
        yield p


def _secrets(server: Any) -> dict[str, str]:
    """The upstream's credentials: the proxy signs again requests a rule edited."""
    return {server.access_key: server.secret_key}


def _client(server: Any, proxy: S3Proxy, region: str = "us-east-1", **config: Any) -> Any:
    config.setdefault("retries", {"mode": "standard", "total_max_attempts": 1})
    return SESSION.client(
        "s3", endpoint_url=proxy.endpoint_url, region_name=region,
        aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}, **config),
    )  # fmt: skip


def _error(info: pytest.ExceptionInfo[ClientError]) -> tuple[int, dict[str, str]]:
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


SMALL_PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)

def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()
