"""The transfer flows end to end against a real S3 server (rclone serve s3) and moto's server."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from pathlib import Path

import pytest
from prefect.artifacts import Artifact
from prefect_aws import AwsCredentials, MinIOCredentials

from prefect_s3_concurrency.errors import ConfigurationError, S3AccessError
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix, upload_directory
from prefect_s3_concurrency.local.files import list_local_files
from prefect_s3_concurrency.s3.connection import S3Connection

FILES = {
    "a.txt": b"alpha\n",
    "empty.bin": b"",
    "nested/deeper/still/x.csv": b"1,2\n",
    "with space/ünï cødé 日本.txt": "grüße\n".encode(),
    "odd +%#?&=~.txt": b"odd",
}


@pytest.fixture(scope="module")
def rclone_conn(rclone_block: str) -> S3Connection:
    """A connection through a saved AwsCredentials block (the block path users take)."""
    return S3Connection(credentials_block=rclone_block)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    return root


def _digests(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256(p.read_bytes()).hexdigest() for rel, p, _ in list_local_files(root)}


def test_round_trip_skip_and_artifact(rclone_s3, rclone_conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    files = dict(FILES, **{"big/twenty.bin": os.urandom(20 * 1024 * 1024)})  # multipart
    src = _tree(tmp_path / "src", files)
    up = upload_directory(str(src), f"s3://{bucket}/in", workers=4, connection=rclone_conn)
    assert (up.objects, up.bytes, up.failed, up.rejected) == (
        len(files),
        sum(map(len, files.values())),
        {},
        {},
    )
    down = download_prefix(
        f"s3://{bucket}/in", str(tmp_path / "out"), workers=4, connection=rclone_conn
    )
    assert down.objects == len(files) and down.failed == {} and down.skipped == 0
    assert _digests(tmp_path / "out") == _digests(src)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".partial")]

    again = download_prefix(
        f"s3://{bucket}/in", str(tmp_path / "out"), workers=4, connection=rclone_conn
    )
    assert (again.objects, again.skipped) == (0, len(files))
    up_again = upload_directory(str(src), f"s3://{bucket}/in", workers=4, connection=rclone_conn)
    assert (up_again.objects, up_again.skipped) == (0, len(files))

    artifact = Artifact.get("download-summary")
    assert artifact is not None and artifact.type == "table"
    assert "skipped (already identical)" in str(artifact.data)


def test_dry_run_and_filters(rclone_s3, rclone_conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    src = _tree(tmp_path / "src", FILES)
    dry = upload_directory(str(src), f"s3://{bucket}/p", dry_run=True, connection=rclone_conn)
    assert dry.dry_run and sorted(dry.planned) == sorted(f"p/{k}" for k in FILES)
    assert rclone_s3.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0

    upload_directory(
        str(src), f"s3://{bucket}/p", include=["*.txt", "*.csv"], exclude=["with space/*"],
        connection=rclone_conn,
    )  # fmt: skip
    listed = sorted(o["Key"] for o in rclone_s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == ["p/a.txt", "p/nested/deeper/still/x.csv", "p/odd +%#?&=~.txt"]

    out = tmp_path / "out"
    dry_down = download_prefix(f"s3://{bucket}/p", str(out), dry_run=True, connection=rclone_conn)
    assert dry_down.objects == 3 and list(out.iterdir()) == []
    part = download_prefix(f"s3://{bucket}/p/nested", str(out), connection=rclone_conn)
    assert part.objects == 1 and (out / "deeper/still/x.csv").read_bytes() == b"1,2\n"


def test_empty_prefix_completes_with_zero(rclone_s3, rclone_conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    summary = download_prefix(f"s3://{bucket}/nothing", str(tmp_path), connection=rclone_conn)
    assert (summary.objects, summary.bytes, summary.failed) == (0, 0, {})


def test_traversal_keys_rejected_against_moto_server(moto_server, tmp_path) -> None:
    client = moto_server.client()
    client.create_bucket(Bucket="trav")
    evil = ["p/../escape.txt", "p/a/../../escape2.txt", "p//abs", "p/x\\..\\..\\y", "p/ok/../../z"]
    for key in [*evil, "p/good.txt"]:
        client.put_object(Bucket="trav", Key=key, Body=b"data")
    dest = tmp_path / "dest"
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    summary = download_prefix(
        "s3://trav/p", str(dest), connection=conn, allow_rejected=True
    )  # rejected keys would fail the run otherwise (tests/integration/test_rejected_keys.py)
    assert set(summary.rejected) == set(evil)
    assert summary.objects == 1 and (dest / "good.txt").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dest", "good.txt"]


def test_failed_object_fails_run_and_names_key(moto_server, tmp_path) -> None:
    client = moto_server.client()
    client.create_bucket(Bucket="clash")
    client.put_object(Bucket="clash", Key="c/x", Body=b"file")  # 'x' as a file ...
    client.put_object(Bucket="clash", Key="c/x/y", Body=b"and as a directory")
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    with pytest.raises(TransferFailed, match="c/x") as info:
        download_prefix("s3://clash/c", str(tmp_path), task_retries=0, connection=conn)
    failed = info.value.summary.failed
    assert len(failed) == 1 and info.value.summary.objects == 1
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_minio_block_and_env_credentials(rclone_s3, bucket_factory, tmp_path, monkeypatch) -> None:
    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="k/one.txt", Body=b"1")
    name = f"minio-{uuid.uuid4().hex[:8]}"
    MinIOCredentials(
        minio_root_user=rclone_s3.access_key,
        minio_root_password=rclone_s3.secret_key,
        region_name=rclone_s3.region,
        aws_client_parameters={"endpoint_url": rclone_s3.endpoint_url},
    ).save(name)
    conn = S3Connection(credentials_block=f"minio-credentials/{name}")
    assert download_prefix(f"s3://{bucket}/k", str(tmp_path / "a"), connection=conn).objects == 1
    for key, value in rclone_s3.env().items():
        monkeypatch.setenv(key, value)  # the default boto3 chain, endpoint from the environment
    assert download_prefix(f"s3://{bucket}/k", str(tmp_path / "b")).objects == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_clear_one_line_errors(rclone_s3, rclone_conn, bucket_factory, tmp_path) -> None:
    bucket = bucket_factory(rclone_s3)
    good = dict(endpoint_url=rclone_s3.endpoint_url, max_attempts=1)
    bad_creds = f"bad-{uuid.uuid4().hex[:8]}"
    AwsCredentials(
        aws_access_key_id=rclone_s3.access_key, aws_secret_access_key="wrong-secret",
        aws_client_parameters={"endpoint_url": rclone_s3.endpoint_url},
    ).save(bad_creds)  # fmt: skip
    cases = [
        (S3AccessError, "does not exist",
         dict(source="s3://no-such-bucket/x", connection=rclone_conn)),
        (S3AccessError, "denied", dict(source=f"s3://{bucket}/x",
                                       connection=S3Connection(credentials_block=bad_creds))),
        (S3AccessError, "cannot reach", dict(source=f"s3://{bucket}/x", connection=S3Connection(
            endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1))),
        (ConfigurationError, "no aws-credentials or minio-credentials or s3-bucket block",
         dict(source=f"s3://{bucket}/x", connection=S3Connection(credentials_block="missing"))),
    ]  # fmt: skip
    for exc_type, text, kwargs in cases:
        with pytest.raises(exc_type, match=text) as info:
            download_prefix(dest_dir=str(tmp_path / "d"), **kwargs)
        assert "\n" not in str(info.value)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError, match="not writable"):
        download_prefix(f"s3://{bucket}/x", str(blocker / "sub"), connection=S3Connection(**good))


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (dict(source="bucket/x"), "s3://"),
        (dict(source="http://bucket/x"), "s3://"),
        (dict(source="s3://bkt/x", workers=0), "greater than or equal to 1"),
    ],
)
def test_parameter_validation(kwargs, text, tmp_path) -> None:
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match=text):
        download_prefix(dest_dir=str(tmp_path), **kwargs)
