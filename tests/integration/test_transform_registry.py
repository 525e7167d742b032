"""Run parameters name a registered transform; they cannot import code."""

from __future__ import annotations

import pytest

from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.transforms.registry import (
    TRANSFORMS_ENV,
    TransformError,
    load_transform,
    registered_transforms,
)
from prefect_s3_concurrency.transforms.square import square


@pytest.mark.parametrize("spec", ["os:_exit", "time:sleep", "builtins:print", "subprocess:run"])
def test_import_paths_are_refused(spec: str) -> None:
    with pytest.raises(TransformError) as info:
        load_transform(spec)
    message = str(info.value)
    assert "not a registered transform" in message and "\n" not in message
    assert "square" in message and "cube" in message  # names the registered ones


def test_registry_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_transform("square") == ("square", square)
    name, fn = load_transform(" cube ")
    assert name == "cube" and fn(3) == 27  # conftest registers it through the env var
    monkeypatch.setenv(TRANSFORMS_ENV, "neg=operator:neg, twice=pipeline_transforms:twice")
    assert set(registered_transforms()) >= {"square", "neg", "twice"}
    assert "cube" not in registered_transforms()
    assert load_transform("neg")[1](4) == -4
    with pytest.raises(TransformError, match="no attribute 'twice'"):
        load_transform("twice")  # registered, but the function does not exist
    monkeypatch.setenv(TRANSFORMS_ENV, "square=os:_exit")
    assert load_transform("square") == ("square", square)  # the built-in cannot be replaced


@pytest.mark.parametrize("value", ["nonsense", "x=", "=m:f", "x=m", "x=m:f,x=m:g"])
def test_bad_registry_setting_is_a_clear_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv(TRANSFORMS_ENV, value)
    with pytest.raises(TransformError, match=TRANSFORMS_ENV):
        load_transform("cube")


def test_flow_refuses_unregistered_transform_before_any_transfer(moto_server) -> None:
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    state = square_objects(
        "s3://no-such-in/x", "s3://no-such-out/y", transform="os:_exit", connection=conn,
        return_state=True,
    )  # fmt: skip
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, Exception) and "not a registered transform" in str(exc), exc
