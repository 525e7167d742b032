"""Shared session fixtures: safe environment, Prefect test harness, local S3 servers."""

from __future__ import annotations

import os

# Before Prefect is imported (it reads its settings once): a loaded 2-core machine can take
# more than the default 20 s to start a temporary API server.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from prefect_s3_concurrency.s3.engine_registry import ENGINE_MODULES as ENGINE_MODULES_REGISTERED
from prefect_s3_concurrency.s3.local_server import LocalS3Server

_SAFE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Test transforms (tests/pipeline_transforms.py), registered as a deployment would: by
    # configuration of the process (inherited by spawned pool workers), never by a parameter.
    "PREFECT_S3_TRANSFORMS": (
        "cube=pipeline_transforms:cube,die13=pipeline_transforms:die_on_13,"
        "hang=pipeline_transforms:hang,exit13=pipeline_transforms:exit_on_13"
    ),
}


@pytest.fixture(scope="session", autouse=True)
def safe_env() -> Iterator[None]:
    """Fake AWS credentials, no profile/endpoint overrides, no Prefect analytics."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name == "AWS_PROFILE" or name.startswith("AWS_ENDPOINT_URL"):
                mp.delenv(name)
        for name, value in _SAFE_ENV.items():
            mp.setenv(name, value)
        yield


# Modules whose tests run once per transfer engine (PREFECT_S3_ENGINE steers engine="auto",
# also in the flow processes they start).
ENGINE_MODULES = {
    "test_faults", "test_sync_flows", "test_secrets", "test_transfer_flows", "test_pipeline",
    "test_engines", "test_ranged", "test_verification", "test_real_s3",
}  # fmt: skip
ENGINES = tuple(ENGINE_MODULES_REGISTERED)  # every registered engine
LAYERS = ("unit", "integration", "e2e")  # tests/<layer>/: each test carries its folder's mark


_SERVER_BEFORE = pytest.StashKey[bool]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note whether a local Prefect server ran in this ``PREFECT_HOME`` before the tests."""
    from prefect_s3_concurrency.runtime.prefect_server import running_server

    if not hasattr(session.config, "workerinput"):  # the controller, once for the whole run
        session.config.stash[_SERVER_BEFORE] = running_server() is not None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the local Prefect server an in-process command run started in this
    ``PREFECT_HOME`` (one that ran before the tests is left alone): nothing outlives a run."""
    from prefect_s3_concurrency.runtime.prefect_server import running_server, stop_server

    before = session.config.stash.get(_SERVER_BEFORE, True)
    if not hasattr(session.config, "workerinput") and not before and running_server():
        stop_server()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, from its folder: ``pytest -m unit`` runs the unit tests."""
    for item in items:
        layer = item.path.parent.name
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the engine-dependent modules over every engine."""
    if metafunc.definition.get_closest_marker("one_engine"):
        return
    if metafunc.module.__name__ in ENGINE_MODULES and "s3_engine" in metafunc.fixturenames:
        metafunc.parametrize("s3_engine", ENGINES, indirect=True)


@pytest.fixture(autouse=True)
def s3_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The engine this test runs with (None: the default), set for ``engine="auto"``."""
    from prefect_s3_concurrency.s3.engines import ENGINE_ENV

    name = getattr(request, "param", None)
    if name:
        monkeypatch.setenv(ENGINE_ENV, name)
    return name


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(safe_env: None) -> Iterator[None]:
    """Run every flow in the session against a temporary Prefect server and database."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # a loaded 2-core machine is slow
        yield


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test S3 server listens and how to reach it."""

    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self, **config_kwargs: Any) -> Any:
        """Return a path-style boto3 S3 client for this endpoint."""
        from botocore.config import Config

        s3_cfg = {"addressing_style": "path", **config_kwargs.pop("s3", {})}
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3=s3_cfg, **config_kwargs),
        )


@pytest.fixture(scope="session")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3Server]:
    """A running ``rclone serve s3`` (LocalS3Server) over a session temp directory."""
    root: Path = tmp_path_factory.mktemp("rclone-s3")
    with LocalS3Server(root=root) as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real ``prefect server start`` on 127.0.0.1 for every module that needs one."""
    from prefect_processes import PrefectServer

    with PrefectServer(tmp_path_factory.mktemp("prefect-server-home")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Endpoint]:
    """A threaded moto server on 127.0.0.1 (random port); accepts any credentials."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Endpoint(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def bucket_factory() -> Callable[..., str]:
    """Return ``make(server, prefix="t") -> name``: create a uniquely named bucket."""

    def make(server: LocalS3Server | S3Endpoint, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}".lower()
        server.client().create_bucket(Bucket=name)
        return name

    return make


@pytest.fixture(scope="session")
def rclone_block(rclone_s3: LocalS3Server) -> str:
    """Name of a saved prefect-aws ``AwsCredentials`` block for ``rclone_s3`` (the block path)."""
    from prefect_aws import AwsCredentials

    name = f"rclone-{uuid.uuid4().hex[:8]}"
    AwsCredentials(
        aws_access_key_id=rclone_s3.access_key,
        aws_secret_access_key=rclone_s3.secret_key,
        region_name=rclone_s3.region,
        aws_client_parameters={"endpoint_url": rclone_s3.endpoint_url},
    ).save(name)
    return name


@pytest.fixture(scope="session")
def local_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``PREFECT_HOME`` for commands run without ``PREFECT_API_URL``: the first one starts
    its local Prefect server, which is stopped at the end of the session."""
    from prefect_s3_concurrency.runtime.prefect_server import stop_server

    home = tmp_path_factory.mktemp("prefect-home")
    try:
        yield home
    finally:
        stop_server(home)
