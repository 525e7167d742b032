"""The engine registry: a new engine is one module defining ``SPEC`` plus one registry line."""

from __future__ import annotations

import textwrap
from typing import get_args

import boto3
import pytest
from moto import mock_aws
from prefect.utilities.callables import parameter_schema

from prefect_s3_concurrency import download_prefix
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engine_registry import ENGINE_ENV, ENGINE_MODULES, EngineName
from prefect_s3_concurrency.s3.engines import (
    batches_for,
    in_flight_for,
    open_engine,
    resolve_engine,
)
from prefect_s3_concurrency.s3.transfer import download_objects, list_objects

NEW_ENGINE = '''
from prefect_s3_concurrency.s3.engine_registry import EngineSpec, botocore_client
from prefect_s3_concurrency.s3.engines.boto3_engine import Boto3Engine


class CountingEngine(Boto3Engine):
    name = "counting"
    gets = 0

    async def get(self, bucket, key, *args, **kwargs):
        CountingEngine.gets += 1
        async for chunk in super().get(bucket, key, *args, **kwargs):
            yield chunk


def _open(conn, pool_size, in_flight):
    return CountingEngine(botocore_client(conn, "counting", pool_size, in_flight), in_flight)


SPEC = EngineSpec(name="counting", requests_in_flight=3, workers_per_batch=2,
                  reaches_moto_mock=True, open=_open)
'''


@pytest.fixture
def counting_engine(tmp_path, monkeypatch):
    """The module of a new engine, and its one line in the registry."""
    (tmp_path / "counting_engine.py").write_text(textwrap.dedent(NEW_ENGINE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(ENGINE_MODULES, "counting", "counting_engine")
    import counting_engine

    counting_engine.CountingEngine.gets = 0
    return counting_engine


def test_a_new_engine_is_one_module_and_one_registry_line(counting_engine, tmp_path) -> None:
    assert resolve_engine("counting") == "counting"
    assert (in_flight_for("counting", None), batches_for("counting", 8)) == (3, 4)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="reg-bucket")
        client.put_object(Bucket="reg-bucket", Key="a/x.txt", Body=b"hello")
        engine = open_engine(S3Connection(region="us-east-1"), "counting")
        try:
            assert isinstance(engine, counting_engine.CountingEngine)
            assert engine.client.meta.config.max_pool_connections >= batches_for("counting", 10) * 3
            objs = list_objects(client, "reg-bucket", "a/")
            out = tmp_path / "out"
            out.mkdir()
            result = download_objects(
                engine, "reg-bucket", [(o, str(out / o.key)) for o in objs], root=str(out)
            )
        finally:
            engine.close()
    assert result.transferred == ["a/x.txt"] and not result.failed
    assert (out / "a/x.txt").read_bytes() == b"hello"
    assert counting_engine.CountingEngine.gets == 1  # the bytes came through the new engine


def test_the_choices_follow_the_registry() -> None:
    assert get_args(EngineName) == ("auto", *ENGINE_MODULES)
    schema = parameter_schema(download_prefix).model_dump()["properties"]["engine"]
    assert schema["enum"] == ["auto", *ENGINE_MODULES]
    with pytest.raises(ValueError, match="unknown engine 'nope': use auto, obstore, boto3"):
        resolve_engine("nope")


def test_auto_prefers_what_reaches_moto_then_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(ENGINE_ENV, "boto3")
    assert resolve_engine("auto") == "boto3"
    monkeypatch.delenv(ENGINE_ENV)
    assert resolve_engine(None) == next(iter(ENGINE_MODULES))  # the first installed
    with mock_aws():  # only an engine sending through botocore reaches moto's mock
        assert resolve_engine("auto") == "boto3"
