"""No silent drops, no green runs with rejected keys (moto)."""

from __future__ import annotations

import pytest

from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix
from prefect_s3_concurrency.s3.connection import S3Connection

MARKER = "key ends with '/' but holds data (a folder marker with content): not a file"


@pytest.fixture
def seeded(moto_server, bucket_factory):
    client = moto_server.client()
    bucket = bucket_factory(moto_server)
    client.put_object(Bucket=bucket, Key="p/a.txt", Body=b"2\n")
    client.put_object(Bucket=bucket, Key="p/marker/", Body=b"fifteen bytes!\n")
    client.put_object(Bucket=bucket, Key="p/empty/", Body=b"")  # plain folder marker: skipped
    return client, bucket, S3Connection(endpoint_url=moto_server.endpoint_url)


def test_download_reports_marker_with_data_and_fails(seeded, tmp_path) -> None:
    _, bucket, conn = seeded
    state = download_prefix(
        f"s3://{bucket}/p", str(tmp_path / "o"), connection=conn, return_state=True
    )
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, TransferFailed), exc
    assert exc.summary.rejected == {"p/marker/": MARKER} and exc.summary.objects == 1
    assert "1 key(s) rejected in download: p/marker/" in str(exc)
    assert (tmp_path / "o" / "a.txt").read_bytes() == b"2\n"  # the rest was transferred
    allowed = download_prefix(
        f"s3://{bucket}/p", str(tmp_path / "o"), connection=conn, allow_rejected=True
    )
    assert allowed.rejected == {"p/marker/": MARKER} and allowed.skipped == 1


def test_pipeline_fails_on_rejected_unless_allowed(seeded, bucket_factory, moto_server) -> None:
    client, bucket, conn = seeded
    dst = bucket_factory(moto_server, "out")
    params = dict(source=f"s3://{bucket}/p", dest=f"s3://{dst}/q", connection=conn)
    state = square_objects(return_state=True, **params)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, PipelineFailed), exc
    assert "1 key(s) rejected in square-objects: p/marker/" in str(exc)
    assert exc.summary.rejected == {"p/marker/": MARKER} and exc.summary.objects == 1
    assert client.get_object(Bucket=dst, Key="q/a.txt")["Body"].read() == b"4\n"
    allowed = square_objects(allow_rejected=True, **params)
    assert allowed.rejected == {"p/marker/": MARKER} and allowed.resumed == 1


def test_pipeline_max_line_bytes_fails_only_that_object(moto_server, bucket_factory) -> None:
    """Item 7 at flow level: the cap is a run parameter and fails one object, named."""
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    client.put_object(Bucket=src, Key="i/long.txt", Body=b"1\n" + b"7" * 100 + b"\n")
    client.put_object(Bucket=src, Key="i/ok.txt", Body=b"3\n")
    state = square_objects(
        f"s3://{src}/i", f"s3://{dst}/o", max_line_bytes=64, return_state=True,
        connection=S3Connection(endpoint_url=moto_server.endpoint_url),
    )  # fmt: skip
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, PipelineFailed), exc
    assert list(exc.summary.failed) == ["i/long.txt"]
    assert "line 2: line longer than max_line_bytes=64" in exc.summary.failed["i/long.txt"]
    assert client.get_object(Bucket=dst, Key="o/ok.txt")["Body"].read() == b"9\n"
