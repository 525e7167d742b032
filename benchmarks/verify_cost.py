"""What verification costs, per GiB: hashing alone, and engine-level downloads by path.

``python -m benchmarks.verify_cost [--mib 256] [--objects 4]`` starts a moto server (it
stores the ``x-amz-checksum-*`` it is sent and returns them with ``ChecksumMode``), uploads
``objects`` x ``mib`` MiB twice (with this project's uploads, which send CRC64NVME, and with
a client that sends no checksum, in 8 MiB parts), then downloads each set with each engine
and reports seconds per GiB, how each object was verified and the HEADs made per 1,000
objects. Hash throughput is measured on one core, in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from awscrt import checksums as crt
from botocore.config import Config

MIB, GIB = 2**20, 2**30


def hash_rates(mib: int = 256) -> dict[str, float]:
    """GiB/s of each checksum on one core (in memory)."""
    data = os.urandom(mib * MIB)
    rates = {}
    for name, fn in (
        ("crc64nvme", lambda b: crt.crc64nvme(b)),
        ("crc32c", lambda b: crt.crc32c(b)),
        ("md5", lambda b: hashlib.md5(b, usedforsecurity=False).digest()),
    ):
        start = time.perf_counter()
        fn(data)
        rates[name] = round(len(data) / GIB / (time.perf_counter() - start), 2)
    return rates


def _client(endpoint: str, checksums: bool = True):
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_supported" if checksums else "when_required",
    )
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", config=config,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def _plain_upload(client, bucket: str, key: str, path: Path) -> None:
    """A multipart upload in 8 MiB parts without any checksum (an older aws-cli)."""
    up = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    with open(path, "rb") as fh:
        number = 1
        while data := fh.read(8 * MIB):
            etag = client.upload_part(
                Bucket=bucket, Key=key, UploadId=up, PartNumber=number, Body=data
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
            number += 1
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts}
    )


def _uploads(endpoint: str, files: list[Any], gib: float) -> dict[str, float]:
    """Upload ``files`` with the project's CRC64NVME, and plainly; seconds per GiB each."""
    from prefect_s3_concurrency.s3.connection import S3Connection
    from prefect_s3_concurrency.s3.engines import open_engine
    from prefect_s3_concurrency.s3.transfer import upload_files

    client = _client(endpoint)
    for bucket in ("with-crc", "without"):
        client.create_bucket(Bucket=bucket)
    start = time.perf_counter()
    engine = open_engine(S3Connection(endpoint_url=endpoint), "boto3")
    upload_files(engine, "with-crc", files, in_flight=4)
    engine.close()
    with_crc = time.perf_counter() - start
    start = time.perf_counter()
    plain = _client(endpoint, checksums=False)
    for item in files:
        _plain_upload(plain, "without", item.key, Path(item.path))
    plain_s = time.perf_counter() - start
    return {"upload_with_crc64nvme_s_per_gib": round(with_crc / gib, 2),
            "upload_without_checksums_s_per_gib": round(plain_s / gib, 2)}  # fmt: skip


def _downloads(endpoint: str, tmp: Path, gib: float) -> dict[str, dict[str, float]]:
    """Download both buckets with both engines: seconds per GiB, failures, HEADs."""
    from prefect_s3_concurrency.runtime import caches
    from prefect_s3_concurrency.s3.connection import S3Connection
    from prefect_s3_concurrency.s3.engines import open_engine
    from prefect_s3_concurrency.s3.transfer import download_objects, list_objects

    conn, client, downloads = S3Connection(endpoint_url=endpoint), _client(endpoint), {}
    for bucket in ("with-crc", "without"):
        objs = list_objects(client, bucket, "")
        for name in ("obstore", "boto3"):
            dest = tmp / f"{bucket}-{name}"
            dest.mkdir()
            heads = caches.VERIFY_REQUESTS["head"]
            engine = open_engine(conn, name)
            start = time.perf_counter()
            result = download_objects(
                engine, bucket, [(o, str(dest / o.key)) for o in objs], root=str(dest), in_flight=4
            )
            seconds = time.perf_counter() - start
            engine.close()
            downloads[f"{bucket}/{name}"] = {
                "s_per_gib": round(seconds / gib, 2),
                "failed": len(result.failed),
                "size_only": len(result.size_only),
                "heads_per_1000_objects": 1000
                * (caches.VERIFY_REQUESTS["head"] - heads)
                / len(objs),
            }
    return downloads


def run(mib: int, objects: int) -> dict[str, object]:
    """Upload both sets, download them with both engines; the measurements."""
    from moto.server import ThreadedMotoServer

    from prefect_s3_concurrency.s3.transfer import LocalFile

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    out: dict[str, object] = {"hash_gib_per_s": hash_rates(), "object_mib": mib}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            files = []
            for i in range(objects):
                path = src / f"o{i}.bin"
                path.write_bytes(os.urandom(mib * MIB))
                files.append(LocalFile(str(path), f"o{i}.bin", mib * MIB))
            gib = objects * mib * MIB / GIB
            out.update(_uploads(endpoint, files, gib))
            out["downloads"] = _downloads(endpoint, Path(tmp), gib)
    finally:
        server.stop()
    return out


def main() -> None:
    """Print the measurements as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--objects", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps(run(args.mib, args.objects), indent=2))


if __name__ == "__main__":
    main()
