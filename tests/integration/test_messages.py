"""Messages that say what happened and what to do."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError, FlexibleChecksumError

from prefect_s3_concurrency.errors import ConfigurationError, describe_error
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import download_prefix
from prefect_s3_concurrency.local.paths import parse_s3_url
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.transfer import download_objects, list_objects


@pytest.mark.parametrize("url", ["s3://bucket//a", "s3://bucket///"])
def test_double_slash_after_bucket_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"starts with '/'.*write s3://bucket/"):
        parse_s3_url(url)


def test_empty_dest_dir_is_refused(moto_server) -> None:
    with pytest.raises(ConfigurationError, match="dest_dir is empty"):
        download_prefix("s3://some-bucket/x", "", connection=S3Connection(
            endpoint_url=moto_server.endpoint_url))  # fmt: skip


def test_changed_object_says_so() -> None:
    pre = ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one of "
                       "the pre-conditions you specified did not hold"}}, "GetObject")  # fmt: skip
    assert "changed during the run" in describe_error(pre)
    crc = FlexibleChecksumError(error_msg="Expected checksum abc did not match calculated xyz")
    assert "may have changed during the run" in describe_error(crc)


def test_object_overwritten_after_listing(moto_server, bucket_factory, tmp_path) -> None:
    client = moto_server.client()
    bucket = bucket_factory(moto_server)
    client.put_object(Bucket=bucket, Key="p/a.txt", Body=b"old")
    listed = list_objects(client, bucket, "p/")
    client.put_object(Bucket=bucket, Key="p/a.txt", Body=b"new!")
    result = download_objects(client, bucket, [(listed[0], str(tmp_path / "a.txt"))])
    assert "changed during the run" in result.failed["p/a.txt"], result.failed


def test_exact_key_as_prefix_gets_a_hint(moto_server, bucket_factory, tmp_path, caplog) -> None:
    client = moto_server.client()
    bucket = bucket_factory(moto_server)
    client.put_object(Bucket=bucket, Key="dir/x.txt", Body=b"1\n")
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    hint = (
        f"s3://{bucket}/dir/x.txt is an object, not a prefix: did you mean "
        f"s3://{bucket}/dir with --include 'x.txt'?"
    )
    with caplog.at_level(logging.WARNING):
        download_prefix(f"s3://{bucket}/dir/x.txt", str(tmp_path), connection=conn)
        square_objects(f"s3://{bucket}/dir/x.txt", f"s3://{bucket}/out", connection=conn)
    assert caplog.text.count(hint) == 2, caplog.text
