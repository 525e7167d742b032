"""tests/s3proxy: checksum verification (bad digests, aws-chunked trailers, CRC64NVME),
throttling and request counting, with boto3 in front of rclone and moto."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from awscrt import checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from s3proxy import Counting, Faults, S3Proxy, StrictS3, Throttle
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

BAD_DIGESTS = [
    ({"ChecksumCRC32C": base64.b64encode(b"\0\0\0\1").decode()}, "BadDigest"),
    ({"ChecksumSHA256": base64.b64encode(hashlib.sha256(b"x").digest()).decode()}, "BadDigest"),
    ({"ContentMD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()}, "BadDigest"),
    ({"ContentMD5": "bm90IGFuIG1kNQ=="}, "InvalidDigest"),
    ({"ChecksumCRC32": "not base64"}, "InvalidRequest"),
]


def test_bad_checksums_are_refused(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "cks")
    proxy.rules = [StrictS3()]
    client = _client(upstream, proxy, request_checksum_calculation="when_required")
    for headers, code in BAD_DIGESTS:
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=bucket, Key="k", Body=b"payload", **headers)
        assert _error(info)[0] == 400 and _error(info)[1]["Code"] == code, headers
    good = base64.b64encode(checksums.crc32c(b"payload").to_bytes(4, "big")).decode()
    client.put_object(Bucket=bucket, Key="ok", Body=b"payload", ChecksumCRC32C=good)
    listed = upstream.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["ok"]  # the upstream never stored a refused one


def _put_aws_chunked(server: Any, proxy: S3Proxy, path: str, data: bytes, crc32: str) -> int:
    """PUT ``data`` aws-chunked (two chunks) with an ``x-amz-checksum-crc32`` trailer."""
    half = len(data) // 2
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (data[:half], data[half:]))
    body += b"0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % crc32.encode()
    headers = {
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "Content-Encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": str(len(data)), "Content-Length": str(len(body)),
    }  # fmt: skip
    request = AWSRequest("PUT", proxy.endpoint_url + path, headers=headers, data=body)
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(
        request
    )
    conn = http.client.HTTPConnection(proxy.endpoint_url.removeprefix("http://"), timeout=10)
    conn.request("PUT", path, body=body, headers=dict(request.headers.items()))
    status = conn.getresponse().status
    conn.close()
    return status


def test_aws_chunked_trailer_checksum(rclone_s3, rclone_proxy, bucket_factory) -> None:
    # Only the proxy's part: neither rclone nor moto decodes such bodies (they store the
    # framing); botocore sends trailers over https only, so clients here do not either.
    bucket = bucket_factory(rclone_s3, "trl")
    rclone_proxy.rules = [StrictS3()]
    data = os.urandom(200_000)
    good = base64.b64encode(checksums.crc32(data).to_bytes(4, "big")).decode()
    assert _put_aws_chunked(rclone_s3, rclone_proxy, f"/{bucket}/bad", data, "AAAAAA==") == 400
    assert _put_aws_chunked(rclone_s3, rclone_proxy, f"/{bucket}/good", data, good) == 200
    client = _client(rclone_s3, rclone_proxy)
    assert client.head_object(Bucket=bucket, Key="good", ChecksumMode="ENABLED")[
        "ChecksumCRC32"
    ] == good
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == ["good"]




def _crc64(data: bytes) -> str:
    return _b64(checksums.crc64nvme(data), 8)


def test_default_and_full_object_crc64nvme(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "crc")
    proxy.rules = [StrictS3()]
    client = _client(upstream, proxy, request_checksum_calculation="when_required")
    data = os.urandom(70_000)
    client.put_object(Bucket=bucket, Key="plain", Body=data)  # no checksum sent
    head = client.head_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == _crc64(data) and head["ChecksumType"] == "FULL_OBJECT"
    assert "ChecksumCRC64NVME" not in client.head_object(Bucket=bucket, Key="plain")
    got = client.get_object(Bucket=bucket, Key="plain", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got["ChecksumCRC64NVME"] == _crc64(data)
    chunks = [os.urandom(5 * MiB), os.urandom(1000)]
    upload = client.create_multipart_upload(
        Bucket=bucket, Key="mpu", ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    args = {"Bucket": bucket, "Key": "mpu", "UploadId": upload}
    parts = [
        {"PartNumber": n, "ETag": client.upload_part(
            **args, PartNumber=n, Body=chunk, ChecksumCRC64NVME=_crc64(chunk))["ETag"],
         "ChecksumCRC64NVME": _crc64(chunk)}
        for n, chunk in enumerate(chunks, 1)
    ]  # fmt: skip
    with pytest.raises(ClientError) as info:
        client.complete_multipart_upload(
            **args, MultipartUpload={"Parts": parts}, ChecksumCRC64NVME=_crc64(b"wrong"),
            ChecksumType="FULL_OBJECT",
        )  # fmt: skip
    assert _error(info)[1]["Code"] == "BadDigest"
    whole = _crc64(b"".join(chunks))
    client.complete_multipart_upload(
        **args, MultipartUpload={"Parts": parts}, ChecksumCRC64NVME=whole,
        ChecksumType="FULL_OBJECT",
    )  # fmt: skip
    head = client.head_object(Bucket=bucket, Key="mpu", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == whole and head["ChecksumType"] == "FULL_OBJECT"


def test_throttle_answers_slowdown_above_the_rate(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "thr")
    throttle = Throttle(rate_per_s=1, burst=5)  # slow refill: a loaded machine stays above it
    proxy.rules = [counting := Counting(), throttle]
    client = _client(upstream, proxy)
    codes = []
    for _ in range(15):
        try:
            client.head_bucket(Bucket=bucket)
            codes.append(200)
        except ClientError as exc:
            codes.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    assert codes[:5] == [200] * 5 and codes.count(503) >= 8
    assert throttle.slowdowns == codes.count(503) and counting["errors"] == codes.count(503)
    with pytest.raises(ClientError) as info:
        client.list_objects_v2(Bucket=bucket)
    assert _error(info)[1]["Code"] == "SlowDown"
    time.sleep(1.1)  # the rate being tested: one request a second is served again
    client.head_bucket(Bucket=bucket)


def test_counting_requests_in_flight(upstream, proxy, bucket_factory) -> None:
    bucket = bucket_factory(upstream, "cnt")
    direct = upstream.client()
    for i in range(6):
        direct.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x" * i)
    counting = Counting()
    proxy.rules = [counting, Faults(latency_s=0.2)]  # requests overlap while they wait
    client = _client(upstream, proxy, max_pool_connections=6)
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda i: client.get_object(Bucket=bucket, Key=f"k{i}"), range(6)))
    assert [b["Body"].read() for b in bodies] == [b"x" * i for i in range(6)]
    client.get_object(Bucket=bucket, Key="k5", Range="bytes=0-1")
    client.list_objects_v2(Bucket=bucket)
    deadline = time.monotonic() + 5
    while counting["in_flight"] and time.monotonic() < deadline:  # the last reply was sent
        time.sleep(0.01)  # just before the proxy's handler counted it done
    stats = counting.stats
    assert 2 <= stats["max_in_flight"] <= 6 and stats["in_flight"] == 0
    assert (stats["get"], stats["ranged"], stats["list"], stats["requests"]) == (7, 1, 1, 8)
    counting.reset()
    assert counting["requests"] == 0 and counting["max_in_flight"] == 0


