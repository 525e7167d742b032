"""Each engine turns its library's errors into the project's: same messages, same retries.

moto server behind the fault proxy (403 and SlowDown injected, an object changed after it was
listed, a missing bucket), once per engine; deletes in DeleteObjects requests of 1,000.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy

from prefect_s3_concurrency.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    ObjectChangedError,
    ThrottledError,
    is_permanent,
)
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.engines import Boto3Engine, open_engine
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.transfer import delete_objects, download_objects, list_objects

ENGINES = ("obstore", "boto3")
BODY = b"payload"


def _download(engine_name: str, endpoint: str, bucket: str, obj: S3Object, dest: Path) -> Any:
    conn = S3Connection(endpoint_url=endpoint, max_attempts=1)
    engine = open_engine(conn, engine_name)
    try:
        return download_objects(engine, bucket, [(obj, str(dest / "f.txt"))], root=str(dest))
    finally:
        engine.close()


@pytest.fixture
def seeded(moto_server, bucket_factory) -> tuple[Any, str, S3Object]:
    bucket = bucket_factory(moto_server)
    moto_server.client().put_object(Bucket=bucket, Key="k.txt", Body=BODY)
    return moto_server, bucket, S3Object("k.txt", len(BODY), hashlib.md5(BODY).hexdigest())


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize(
    ("kind", "error", "words", "permanent"),
    [("403", AccessDeniedError, "was denied (AccessDenied)", True),
     ("slowdown", ThrottledError, "slow down (SlowDown)", False)],
)  # fmt: skip
def test_refusals_read_the_same_on_every_engine(
    engine_name, kind, error, words, permanent, seeded, tmp_path: Path
) -> None:
    server, bucket, obj = seeded
    with FaultProxy(server.endpoint_url) as proxy:
        proxy.always_fail_keys, proxy.always_fail_kind = {f"{bucket}/k.txt"}, kind
        result = _download(engine_name, proxy.endpoint_url, bucket, obj, tmp_path)
    reason = result.failed["k.txt"]
    assert words in reason and "<" not in reason and "Traceback" not in reason, reason
    assert ("k.txt" in result.permanent) is permanent
    assert is_permanent(error("x")) is permanent


@pytest.mark.parametrize("engine_name", ENGINES)
def test_object_changed_since_the_listing(engine_name, seeded, tmp_path: Path) -> None:
    server, bucket, obj = seeded
    server.client().put_object(Bucket=bucket, Key="k.txt", Body=b"newer!!")  # same size
    result = _download(engine_name, server.endpoint_url, bucket, obj, tmp_path)
    assert "changed during the run" in result.failed["k.txt"], result.failed
    assert result.permanent == ["k.txt"]  # the listed ETag will not match on a retry either
    assert not (tmp_path / "f.txt").exists()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_missing_bucket(engine_name, moto_server, tmp_path: Path) -> None:
    obj = S3Object("k.txt", 7, hashlib.md5(BODY).hexdigest())
    result = _download(engine_name, moto_server.endpoint_url, "no-such-bkt-e1", obj, tmp_path)
    assert "bucket 'no-such-bkt-e1' does not exist" in result.failed["k.txt"], result.failed
    assert result.permanent == ["k.txt"]
    conn = S3Connection(endpoint_url=moto_server.endpoint_url, max_attempts=1)
    engine = open_engine(conn, engine_name)
    try:
        with pytest.raises(BucketNotFoundError, match="does not exist"):
            list_objects(engine, "no-such-bkt-e1", "")
    finally:
        engine.close()


def test_object_changed_is_one_error_for_both_libraries() -> None:
    from botocore.exceptions import ClientError
    from obstore.exceptions import PreconditionError

    from prefect_s3_concurrency.errors import describe_error
    from prefect_s3_concurrency.s3.engines.obstore_errors import obstore_error
    from prefect_s3_concurrency.s3.replies import object_error

    boto = object_error(ClientError({"Error": {"Code": "PreconditionFailed"}}, "GetObject"), "b")
    obst = obstore_error(PreconditionError("Request precondition failure for path k: 412"), "b", "")
    assert isinstance(boto, ObjectChangedError) and isinstance(obst, ObjectChangedError)
    assert (
        "changed during the run"
        in describe_error(boto)
        == describe_error(obst).replace("412", "PreconditionFailed")
    )


class _DeleteRecorder:
    """A botocore client stand-in that records DeleteObjects requests."""

    class meta:
        endpoint_url = "http://127.0.0.1:9"

    def __init__(self, fail_request: int | None = None) -> None:
        self.requests: list[list[str]] = []
        self.fail_request = fail_request

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        keys = [o["Key"] for o in Delete["Objects"]]
        self.requests.append(keys)
        if len(self.requests) == self.fail_request:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "AccessDenied"}}, "DeleteObjects")
        return {"Errors": [{"Key": keys[0], "Code": "InternalError"}]}


@pytest.mark.parametrize("fail_request", [None, 2])
def test_deletes_go_through_the_engine_1000_keys_a_request(fail_request) -> None:
    client = _DeleteRecorder(fail_request)
    keys = [f"k{i:04d}" for i in range(2001)]
    deleted, failed = delete_objects(Boto3Engine(client), "bkt", keys)  # type: ignore[arg-type]
    assert [len(r) for r in client.requests] == [1000, 1000, 1]
    assert sorted(deleted + list(failed)) == keys and not set(deleted) & set(failed)
    assert failed["k0000"] == "delete failed: InternalError"
    if fail_request == 2:  # a refused request fails all its keys, the others go on
        assert all("was denied (AccessDenied)" in failed[k] for k in keys[1000:2000])
        assert "k2000" in failed and "k2000" not in deleted  # its own per-key error
    else:
        assert len(failed) == 3
