"""Prefect-native flow parameters: block pickers, S3Bucket locations, descriptions, dry-run
key lists and ``fail_if_empty``."""

from __future__ import annotations

import pytest
from prefect.artifacts import Artifact
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from prefect_aws import AwsCredentials, S3Bucket
from reliability_helpers import flow_logs

from prefect_s3_concurrency import download_prefix, square_objects, upload_directory
from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.flows.common import EmptySourceError, resolve_location
from prefect_s3_concurrency.local import paths
from prefect_s3_concurrency.local.paths import S3Url
from prefect_s3_concurrency.s3.connection import S3Connection

FLOWS = [download_prefix, upload_directory, square_objects]


def _creds(server) -> AwsCredentials:
    return AwsCredentials(
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        aws_client_parameters={"endpoint_url": server.endpoint_url},
    )


@pytest.mark.parametrize("flow_obj", FLOWS, ids=lambda f: f.name)
def test_every_parameter_has_a_description(flow_obj) -> None:
    props = parameter_schema(flow_obj).model_dump()["properties"]
    missing = [name for name, prop in props.items() if not prop.get("description")]
    assert not missing, f"{flow_obj.name}: parameters without a description: {missing}"


@pytest.mark.parametrize("flow_obj", FLOWS, ids=lambda f: f.name)
def test_credentials_is_a_block_picker(flow_obj) -> None:
    schema = parameter_schema(flow_obj).model_dump()
    options = schema["properties"]["credentials"]["anyOf"]
    refs = [r["$ref"].rsplit("/", 1)[-1] for r in options if "$ref" in r]
    assert {"AwsCredentials", "MinIOCredentials"} <= set(refs)
    slugs = {schema["definitions"][name].get("block_type_slug") for name in refs}
    assert {"aws-credentials", "minio-credentials"} <= slugs
    # the connection form no longer carries a block object of its own
    conn = schema["definitions"]["S3Connection"]["properties"]
    assert "credentials" not in conn and "credentials_block" in conn


def test_location_offers_a_url_or_an_s3bucket_block() -> None:
    schema = parameter_schema(download_prefix).model_dump()
    options = schema["properties"]["source"]["anyOf"]
    assert options[0]["type"] == "string" and options[0]["pattern"].startswith("^s3://")
    assert options[1]["$ref"].endswith("/S3Bucket")


@pytest.mark.parametrize("flow_obj", FLOWS, ids=lambda f: f.name)
def test_a_location_is_parsed_once_by_validation(flow_obj, monkeypatch) -> None:
    """Validation turns the text into an S3Url; nothing below it parses the URL again."""
    name = "source" if "source" in parameter_schema(flow_obj).properties else "source_dir"
    url_param = "dest" if name == "source_dir" else "source"
    params = {"source": "s3://in-bucket/raw/", "dest": "s3://out-bucket/sq", "dest_dir": "d",
              "source_dir": "d"}  # fmt: skip
    wanted = {k: params[k] for k in parameter_schema(flow_obj).properties if k in params}
    got = flow_obj.validate_parameters(wanted)[url_param]
    assert isinstance(got, S3Url) and got.bucket.endswith("-bucket")
    monkeypatch.setattr(paths, "parse_s3_url", _never)
    assert resolve_location(got, S3Connection())[0] is got  # passed on, not re-parsed
    bad = {**wanted, url_param: {"bucket": "Bad_Bucket", "prefix": ""}}  # a serialised S3Url
    with pytest.raises(ParameterTypeError, match="invalid bucket name 'Bad_Bucket'"):
        flow_obj.validate_parameters(bad)


def _never(url: str) -> None:
    raise AssertionError(f"{url} parsed again")


def test_an_s3url_is_valid_by_construction() -> None:
    with pytest.raises(ConfigurationError, match="invalid bucket name"):
        S3Url(bucket="Bad_Bucket")
    with pytest.raises(ConfigurationError, match="starts with '/'"):
        S3Url(bucket="bucket", prefix="/p")
    assert str(S3Url(bucket="bucket", prefix="a/b")) == "s3://bucket/a/b"


def test_resolve_location_takes_bucket_folder_and_credentials_from_the_block() -> None:
    creds = AwsCredentials(aws_access_key_id="k", aws_secret_access_key="s")
    block = S3Bucket(bucket_name="my-bucket", bucket_folder="/base/", credentials=creds)
    url, conn = resolve_location(block, S3Connection(region="eu-west-1"))
    assert (url.bucket, url.folder) == ("my-bucket", "base/")
    assert conn.credentials == creds and conn.region == "eu-west-1"
    other = AwsCredentials(aws_access_key_id="x", aws_secret_access_key="y")
    with pytest.raises(ConfigurationError, match="has its own credentials"):
        resolve_location(block, S3Connection(credentials=other))


def test_two_credential_sources_are_refused() -> None:
    creds = AwsCredentials(aws_access_key_id="k", aws_secret_access_key="s")
    with pytest.raises(ConfigurationError, match="use one"):
        S3Connection(credentials_block="saved").with_credentials(creds)


@pytest.mark.integration
def test_credentials_block_parameter_and_s3bucket_source(
    rclone_s3, bucket_factory, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.txt").write_bytes(b"bb")
    up = upload_directory(str(src), f"s3://{bucket}/base/in", credentials=_creds(rclone_s3))
    assert (up.objects, up.failed) == (2, {})
    block = S3Bucket(bucket_name=bucket, bucket_folder="base", credentials=_creds(rclone_s3))
    down = download_prefix(block, str(tmp_path / "out"), include=["in/*"])
    assert down.source == f"s3://{bucket}/base"
    assert sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.txt")
    ) == [
        "in/a.txt",
        "in/sub/b.txt",
    ]


@pytest.mark.integration
def test_dry_run_names_every_key_in_log_and_artifact(rclone_s3, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    keys = [f"p/k{i}.txt" for i in range(5)]
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "extra.txt").write_bytes(b"old")
    state = download_prefix(
        f"s3://{bucket}/p", str(tmp_path / "out"), dry_run=True, delete_extra=True,
        credentials=_creds(rclone_s3), return_state=True,
    )  # fmt: skip
    summary = state.result()
    assert sorted(summary.planned) == keys and summary.deleted == ["extra.txt"]
    assert (tmp_path / "out" / "extra.txt").exists() and not (tmp_path / "out" / "k0.txt").exists()
    logs = "\n".join(flow_logs(state.state_details.flow_run_id))
    for key in keys:
        assert f"would download {key!r}" in logs
    assert "would delete 'extra.txt'" in logs
    artifact = Artifact.get("download-summary")
    assert artifact is not None
    for key in [*keys, "extra.txt"]:
        assert key in str(artifact.data)


@pytest.mark.integration
def test_fail_if_empty(rclone_s3, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    typo = f"s3://{bucket}/no-such-prefix"
    quiet = download_prefix(typo, str(tmp_path / "a"), credentials=_creds(rclone_s3))
    assert quiet.objects == 0
    with pytest.raises(EmptySourceError, match="no-such-prefix.*fail_if_empty"):
        download_prefix(
            typo, str(tmp_path / "b"), credentials=_creds(rclone_s3), fail_if_empty=True
        )
    with pytest.raises(EmptySourceError):
        upload_directory(
            str(tmp_path / "a"), f"s3://{bucket}/x", credentials=_creds(rclone_s3),
            fail_if_empty=True,
        )  # fmt: skip
