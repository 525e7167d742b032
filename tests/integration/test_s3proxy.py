"""tests/s3proxy: the strict S3 rules (KMS ETags, regions, limits, archived and SSE-C objects,
CompleteMultipartUpload's 200 error), with boto3 and the aws CLI, in front of rclone and moto.

One proxy per upstream for the module; each test sets the rules it needs and makes its
own buckets (straight on the upstream, as a bucket's owner would have).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from awscrt import checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from s3proxy import Counting, S3Proxy, StrictS3
from s3proxy_support import (  # noqa: F401 - fixtures
    SMALL_PARTS,
    MiB,
    _b64,
    _client,
    _error,
    _md5,
    _secrets,
    proxy,
    rclone_proxy,
    upstream,
)

REPO = Path(__file__).resolve().parents[2]


def test_kms_bucket_round_trip(upstream, proxy, bucket_factory, tmp_path: Path) -> None:
    bucket = bucket_factory(upstream, "kms")
    strict = StrictS3(kms_buckets={bucket})
    proxy.rules = [strict]
    client = _client(upstream, proxy)
    small, big = os.urandom(1000), os.urandom(11 * MiB)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "big").write_bytes(big)
    client.upload_file(str(tmp_path / "small"), bucket, "small")
    client.upload_file(str(tmp_path / "big"), bucket, "big", Config=SMALL_PARTS)  # 3 parts
    put = client.put_object(Bucket=bucket, Key="put", Body=small)
    assert put["ETag"] != f'"{_md5(small)}"' and put["ServerSideEncryption"] == "aws:kms"
    assert put["SSEKMSKeyId"].startswith("arn:aws:kms:")
    heads = {k: client.head_object(Bucket=bucket, Key=k) for k in ("small", "big", "put")}
    assert heads["put"]["ETag"] == put["ETag"]
    assert heads["small"]["ETag"] != f'"{_md5(small)}"' and len(heads["small"]["ETag"]) == 34
    assert all(h["ServerSideEncryption"] == "aws:kms" for h in heads.values())
    direct = upstream.client().head_object(Bucket=bucket, Key="big")["ETag"]
    assert heads["big"]["ETag"] != direct and heads["big"]["ETag"].endswith('-3"')
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"]: o["ETag"].strip('"') for o in listed} == {
        k: h["ETag"].strip('"') for k, h in heads.items()
    }
    client.download_file(bucket, "big", str(tmp_path / "big.out"), Config=SMALL_PARTS)
    client.download_file(bucket, "small", str(tmp_path / "small.out"))
    assert (tmp_path / "big.out").read_bytes() == big
    assert (tmp_path / "small.out").read_bytes() == small
    parts = [big[i : i + 5 * MiB] for i in range(0, len(big), 5 * MiB)]
    digests = b"".join(checksums.crc32(p).to_bytes(4, "big") for p in parts)
    checked = client.head_object(Bucket=bucket, Key="big", ChecksumMode="ENABLED")
    assert checked["ChecksumCRC32"] == f"{_b64(checksums.crc32(digests), 4)}-3"  # s3transfer
    assert checked["ChecksumType"] == "COMPOSITE"
    etag = heads["big"]["ETag"]
    ranged = client.get_object(Bucket=bucket, Key="big", IfMatch=etag, Range="bytes=0-9")
    assert ranged["Body"].read() == big[:10] and ranged["ETag"] == etag
    with pytest.raises(ClientError) as info:  # compared exactly, as S3 does
        client.get_object(Bucket=bucket, Key="big", IfMatch=etag.upper())
    status, error = _error(info)
    assert (status, error["Code"], error["Condition"]) == (412, "PreconditionFailed", "If-Match")
    with pytest.raises(ClientError, match="304"):
        client.head_object(Bucket=bucket, Key="put", IfNoneMatch=put["ETag"])


def test_multipart_upload_through_strict_proxy(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "mpu")
    proxy.rules = [StrictS3(kms_buckets={bucket}), counting := Counting()]
    client = _client(upstream, proxy)
    parts, data = [], [os.urandom(5 * MiB), os.urandom(123)]
    upload = client.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    for number, chunk in enumerate(data, 1):
        reply = client.upload_part(
            Bucket=bucket, Key="mpu", UploadId=upload, PartNumber=number, Body=chunk
        )
        assert reply["ETag"] != f'"{_md5(chunk)}"'
        parts.append({"PartNumber": number, "ETag": reply["ETag"]})
    done = client.complete_multipart_upload(
        Bucket=bucket, Key="mpu", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"] == client.head_object(Bucket=bucket, Key="mpu")["ETag"]
    assert client.get_object(Bucket=bucket, Key="mpu")["Body"].read() == b"".join(data)
    stats = counting.stats
    assert (stats["create_mpu"], stats["part"], stats["complete"], stats["get"]) == (1, 2, 1, 1)


def _signed(server: Any, proxy: S3Proxy, method: str, path: str, region: str) -> Any:
    """Send a request SigV4-signed for ``region`` (no SDK retry or redirect)."""
    url = proxy.endpoint_url + path
    request = AWSRequest(method, url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    credentials = Credentials(server.access_key, server.secret_key)
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    conn = http.client.HTTPConnection(proxy.endpoint_url.removeprefix("http://"), timeout=10)
    conn.request(method, path, headers=dict(request.headers.items()))
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def test_bucket_in_another_region(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "eu")
    proxy.rules = [StrictS3(bucket_regions={bucket: "eu-west-1"})]
    wrong = _signed(upstream, proxy, "GET", f"/{bucket}?list-type=2", "us-east-1")
    assert wrong.status == 400 and wrong.getheader("x-amz-bucket-region") == "eu-west-1"
    assert b"<Code>AuthorizationHeaderMalformed</Code>" in wrong.body
    assert (
        b"<Message>The authorization header is malformed; the region 'us-east-1' is wrong; "
        b"expecting 'eu-west-1'</Message><Region>eu-west-1</Region>" in wrong.body
    )
    head = _signed(upstream, proxy, "HEAD", f"/{bucket}", "us-east-1")
    assert head.status == 400 and head.getheader("x-amz-bucket-region") == "eu-west-1"
    eu = _client(upstream, proxy, region="eu-west-1")
    eu.put_object(Bucket=bucket, Key="k", Body=b"data")
    assert eu.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"
    region = eu.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    assert region["x-amz-bucket-region"] == "eu-west-1"
    assert eu.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    presigned = _client(upstream, proxy, signature_version="s3v4").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "k"}
    )
    conn = http.client.HTTPConnection(proxy.endpoint_url.removeprefix("http://"), timeout=10)
    conn.request("GET", presigned.removeprefix(proxy.endpoint_url))
    reply = conn.getresponse()
    assert reply.status == 400 and b"AuthorizationQueryParametersError" in reply.read()
    conn.close()
    # botocore itself moves to the region named by the 400 (same endpoint, new signature)
    redirected = _client(upstream, proxy, region="us-east-1")
    assert redirected.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"


def test_limits_scaled_down(rclone_s3, rclone_proxy, bucket_factory) -> None:
    bucket = bucket_factory(rclone_s3, "lim")
    rclone_proxy.rules = [
        StrictS3(max_parts=3, min_part_size=1 * MiB, max_part_size=2 * MiB, max_put_size=2 * MiB)
    ]
    client = _client(rclone_s3, rclone_proxy)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="big", Body=os.urandom(2 * MiB + 1))
    assert _error(info)[1]["Code"] == "EntityTooLarge"
    assert _error(info)[1]["MaxSizeAllowed"] == str(2 * MiB)
    upload = client.create_multipart_upload(Bucket=bucket, Key="mpu")["UploadId"]
    part = {"Bucket": bucket, "Key": "mpu", "UploadId": upload}
    with pytest.raises(ClientError) as info:
        client.upload_part(**part, PartNumber=4, Body=b"x")
    assert _error(info)[:1] == (400,) and _error(info)[1]["Code"] == "InvalidArgument"
    with pytest.raises(ClientError) as info:
        client.upload_part(**part, PartNumber=1, Body=os.urandom(2 * MiB + 1))
    assert _error(info)[1]["Code"] == "EntityTooLarge"
    parts = [
        {"PartNumber": n, "ETag": client.upload_part(**part, PartNumber=n, Body=body)["ETag"]}
        for n, body in ((1, os.urandom(MiB // 2)), (2, b"tail"))
    ]
    with pytest.raises(ClientError) as info:
        client.complete_multipart_upload(**part, MultipartUpload={"Parts": parts})
    status, error = _error(info)
    assert (status, error["Code"], error["PartNumber"]) == (400, "EntityTooSmall", "1")
    client.abort_multipart_upload(**part)
    with pytest.raises(ClientError) as info:
        objects = [{"Key": f"k{i}"} for i in range(1001)]
        client.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    assert _error(info)[1]["Code"] == "MalformedXML"
    client.delete_objects(Bucket=bucket, Delete={"Objects": objects[:1000]})


def test_complete_answers_200_with_an_error(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "c200")
    strict = StrictS3(complete_200_errors=1)
    proxy.rules = [strict]
    client = _client(upstream, proxy)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    etag = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x")
    args = {"Bucket": bucket, "Key": "k", "UploadId": upload,
            "MultipartUpload": {"Parts": [{"PartNumber": 1, "ETag": etag["ETag"]}]}}  # fmt: skip
    with pytest.raises(ClientError) as info:  # botocore reads the 200 as the error it is
        client.complete_multipart_upload(**args)
    assert _error(info)[1]["Code"] == "InternalError"
    strict.complete_200.remaining = 1
    retrying = _client(upstream, proxy, retries={"mode": "standard", "max_attempts": 3})
    retrying.complete_multipart_upload(**args)  # the upload was still open: a retry works
    assert strict.complete_200.sent == 2
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_archived_and_sse_c_objects(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "arc")
    direct = upstream.client()
    for key in ("cold", "warm", "secret"):
        direct.put_object(Bucket=bucket, Key=key, Body=key.encode())
    proxy.rules = [
        StrictS3(archived_keys={f"{bucket}/cold": "GLACIER"}, ssec_keys={f"{bucket}/secret"})
    ]
    client = _client(upstream, proxy)
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key="cold")
    status, error = _error(info)
    assert (status, error["Code"], error["StorageClass"]) == (403, "InvalidObjectState", "GLACIER")
    assert error["Message"] == "The operation is not valid for the object's storage class"
    assert client.head_object(Bucket=bucket, Key="cold")["StorageClass"] == "GLACIER"
    contents = client.list_objects_v2(Bucket=bucket)["Contents"]
    listed = {o["Key"]: o.get("StorageClass") for o in contents}
    assert listed["cold"] == "GLACIER" and listed["warm"] != "GLACIER"
    assert client.get_object(Bucket=bucket, Key="warm")["Body"].read() == b"warm"
    with pytest.raises(ClientError) as info:
        client.get_object(Bucket=bucket, Key="secret")
    status, error = _error(info)
    assert (status, error["Code"]) == (400, "InvalidRequest")
    assert error["Message"].startswith("The object was stored using a form of Server Side")
    with pytest.raises(ClientError, match="400"):
        client.head_object(Bucket=bucket, Key="secret")


@pytest.fixture(scope="session")
def aws_cli() -> Path:
    """The aws CLI (v1, from PyPI) in a venv of its own: it pins botocore exactly."""
    venv = REPO / ".venv-awscli"
    aws = venv / "bin" / "aws"
    if not aws.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "awscli"],
                check=True, timeout=900, capture_output=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot install awscli into {venv} with pip: {exc}")
    return aws


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _aws(aws: Path, server: Any, tmp_path: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )  # fmt: skip
    done = subprocess.run(
        [str(aws), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"aws {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_aws_cli_copies_through_strict_proxy(
    aws_cli, rclone_s3, rclone_proxy, bucket_factory, tmp_path: Path
) -> None:
    kms, eu = bucket_factory(rclone_s3, "cli-kms"), bucket_factory(rclone_s3, "cli-eu")
    rclone_proxy.rules = [StrictS3(kms_buckets={kms}, bucket_regions={eu: "eu-west-1"})]
    source = tmp_path / "up"
    files = {"a.txt": b"alpha\n", "dir/b.bin": os.urandom(70_000), "dir/sub/empty": b"",
             "big.bin": os.urandom(9 * MiB)}  # fmt: skip  # big: over the 8 MiB threshold
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    endpoint = ["--endpoint-url", rclone_proxy.endpoint_url]
    for bucket, region in ((kms, "us-east-1"), (eu, "eu-west-1")):
        target = f"s3://{bucket}/tree/"
        _aws(aws_cli, rclone_s3, tmp_path, "s3", "cp", "--recursive", "--only-show-errors",
             str(source), target, *endpoint, "--region", region)  # fmt: skip
        down = tmp_path / f"down-{bucket}"
        _aws(aws_cli, rclone_s3, tmp_path, "s3", "cp", "--recursive", "--only-show-errors",
             target, str(down), *endpoint, "--region", region)  # fmt: skip
        assert _tree(down) == files
    head = _client(rclone_s3, rclone_proxy).head_object(Bucket=kms, Key="tree/big.bin")
    assert head["ServerSideEncryption"] == "aws:kms" and head["ETag"].endswith('-2"')

