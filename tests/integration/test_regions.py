"""Buckets in another region than the client's: found once, signed for by every engine.

A proxy in front of moto server refuses requests signed for another region than the
bucket's, as S3 does (400 ``AuthorizationHeaderMalformed`` with ``<Region>`` and
``x-amz-bucket-region``), and states the region on HeadBucket. Real AWS's 301 without
``Location`` on the virtual-hosted path is covered by the store configuration and the signed
listing requests built for it (no network).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from obstore.exceptions import GenericError
from reliability_helpers import plan_downloads
from s3proxy import Regions, Reply, Request, S3Proxy

from prefect_s3_concurrency.errors import WrongRegionError, describe_error, is_permanent
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3 import regions
from prefect_s3_concurrency.s3.connection import S3Connection, get_s3_client
from prefect_s3_concurrency.s3.engines import open_engine
from prefect_s3_concurrency.s3.engines.listing import signed_page_request
from prefect_s3_concurrency.s3.engines.obstore_engine import store_config, store_for
from prefect_s3_concurrency.s3.engines.obstore_errors import obstore_error
from prefect_s3_concurrency.s3.records import LocalFile
from prefect_s3_concurrency.s3.transfer import (
    download_objects,
    list_objects,
    upload_files,
)

_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/s3/aws4_request")
ENGINES = ("obstore", "boto3")


class _CountedRegions(Regions):
    """S3's region check (see ``s3proxy.Regions``), counting the requests it refused."""

    def __init__(self, bucket_regions: dict[str, str]) -> None:
        super().__init__(bucket_regions)
        self.refused = 0
        self._lock = threading.Lock()

    def on_request(self, req: Request) -> Reply | None:
        reply = super().on_request(req)
        if reply is not None:
            with self._lock:
                self.refused += 1
        return reply


class RegionProxy(S3Proxy):
    """A proxy whose buckets live in ``bucket_regions`` (the others in us-east-1)."""

    def __init__(self, upstream_url: str, bucket_regions: dict[str, str]) -> None:
        super().__init__(upstream_url, [_CountedRegions(bucket_regions)])

    @property
    def refused(self) -> int:
        """Requests refused for a wrong region so far."""
        return self.rule(_CountedRegions).refused


@pytest.fixture(autouse=True)
def _fresh_regions() -> Iterator[None]:
    caches.clear_all()
    yield
    caches.clear_all()


@pytest.fixture
def eu_bucket(moto_server) -> Iterator[tuple[RegionProxy, str]]:
    """A bucket in eu-west-1 behind a region-checking proxy (the client says us-east-1)."""
    bucket = f"eu-{os.urandom(6).hex()}"
    moto_server.client(region_name="eu-west-1").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    with RegionProxy(moto_server.endpoint_url, {bucket: "eu-west-1"}) as proxy:
        yield proxy, bucket


def test_region_read_from_header_or_error_body() -> None:
    assert regions.region_from_reply({"X-Amz-Bucket-Region": "eu-west-1"}) == "eu-west-1"
    body = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>ap-south-2</Region></Error>"
    assert regions.region_from_reply({}, body) == "ap-south-2"
    assert regions.region_from_reply({"x-amz-bucket-region": "<bad>"}) is None
    assert regions.region_from_reply({}, b"<Error><Code>AccessDenied</Code></Error>") is None


def test_aws_store_signs_for_the_bucket_region_on_its_regional_host() -> None:
    # Real AWS, no endpoint, client in us-east-1, bucket in eu-west-1: object_store must
    # sign for eu-west-1 and address the bucket's own host (a 301 without Location else).
    assert store_config("", "eu-west-1") == {
        "region": "eu-west-1", "virtual_hosted_style_request": True}  # fmt: skip
    assert store_config("https://s3.amazonaws.com", "eu-west-1")["virtual_hosted_style_request"]
    local = store_config("http://127.0.0.1:9000", "eu-west-1")
    assert local["endpoint"] == "http://127.0.0.1:9000"
    assert not local["virtual_hosted_style_request"]
    conn = S3Connection(region="us-east-1")
    client = get_s3_client(conn)
    regions.remember_region(regions.endpoint_of(client), "eu-bkt", "eu-west-1")
    store = store_for(conn, "eu-bkt", client)
    assert store.config["region"] == "eu-west-1" and "endpoint" not in store.config
    assert store.config["virtual_hosted_style_request"] in (True, "true")


def test_aws_listing_request_goes_to_the_bucket_region() -> None:
    from botocore.credentials import Credentials

    creds = Credentials("AKIDEXAMPLE", "secret")
    url, headers = signed_page_request(
        creds, "https://s3.amazonaws.com", "eu-bkt", "eu-west-1", {"list-type": "2"}
    )
    assert url == "https://eu-bkt.s3.eu-west-1.amazonaws.com/?list-type=2"
    assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]
    url, _ = signed_page_request(creds, "", "my.dotted.bkt", "ap-south-1", {"list-type": "2"})
    assert url == "https://s3.ap-south-1.amazonaws.com/my.dotted.bkt?list-type=2"
    url, _ = signed_page_request(creds, "http://127.0.0.1:9/", "b", "eu-west-1", {"a": "1"})
    assert url == "http://127.0.0.1:9/b?a=1"


def test_refused_region_becomes_one_line_naming_it() -> None:
    text = (
        "Generic S3 error: Error performing GET http://127.0.0.1:1/b/k in 1ms - Server returned "
        'non-2xx status code: 400 Bad Request: <?xml version="1.0"?>\n<Error><Code>'
        "AuthorizationHeaderMalformed</Code><Region>eu-west-1</Region></Error>\n\nDebug source:"
    )
    err = obstore_error(GenericError(text), "b", "http://127.0.0.1:1", "us-east-1")
    assert isinstance(err, WrongRegionError) and is_permanent(err)
    line = describe_error(err)
    assert "eu-west-1" in line and "<" not in line and "\n" not in line and len(line) < 200


@pytest.mark.parametrize("engine_name", ENGINES)
def test_round_trip_to_a_bucket_in_another_region(engine_name, eu_bucket, tmp_path: Path) -> None:
    proxy, bucket = eu_bucket
    files = {"a.txt": os.urandom(3000), "d/b.bin": os.urandom(70_000),
             "big.bin": os.urandom(17 << 20)}  # fmt: skip
    src = tmp_path / "src"
    items = []
    for rel, body in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
        items.append(LocalFile(str(src / rel), f"p/{rel}", len(body)))
    conn = S3Connection(endpoint_url=proxy.endpoint_url, region="us-east-1")
    engine = open_engine(conn, engine_name)
    try:
        up = upload_files(engine, bucket, items, in_flight=4)
        assert (sorted(up.transferred), up.failed) == (sorted(i.key for i in items), {})
        listed = list_objects(engine, bucket, "p/")
        assert {o.key: o.size for o in listed} == {f"p/{k}": len(v) for k, v in files.items()}
        (tmp_path / "out").mkdir()
        pairs, rejected = plan_downloads(listed, "p/", tmp_path / "out")
        down = download_objects(engine, bucket, pairs, root=str(tmp_path / "out"), in_flight=4)
    finally:
        engine.close()
    assert (len(down.transferred), down.failed, rejected) == (len(files), {}, {})
    for rel, body in files.items():
        got = (tmp_path / "out" / rel).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), rel
    # The region is learnt once per signer, not per request: from HeadBucket or the first
    # refused listing page; each botocore client (two pool sizes here) follows one refusal.
    assert proxy.refused <= 4, proxy.refused
    assert caches.BUCKET_REGIONS[(proxy.endpoint_url, bucket)] == "eu-west-1"


def test_unfixable_region_fails_each_object_in_one_line(eu_bucket, tmp_path: Path) -> None:
    proxy, bucket = eu_bucket
    (tmp_path / "f.txt").write_bytes(b"data")
    conn = S3Connection(endpoint_url=proxy.endpoint_url, region="us-east-1")
    regions.remember_region(proxy.endpoint_url, bucket, "us-east-1")  # a wrong belief
    engine = open_engine(conn, "obstore")
    try:
        result = upload_files(engine, bucket, [LocalFile(str(tmp_path / "f.txt"), "f.txt", 4)])
    finally:
        engine.close()
    reason = result.failed["f.txt"]
    assert "eu-west-1" in reason and "<" not in reason and len(reason) < 200, reason
    assert result.permanent == ["f.txt"]  # not retried: the same request would be refused


@pytest.mark.parametrize("engine_name", ENGINES)
def test_flows_reach_a_bucket_in_another_region(engine_name, eu_bucket, tmp_path: Path) -> None:
    from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory

    proxy, bucket = eu_bucket
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.txt": os.urandom(100 + i) for i in range(6)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    conn = S3Connection(endpoint_url=proxy.endpoint_url, region="us-east-1")
    up = upload_directory(str(src), f"s3://{bucket}/p", workers=2, connection=conn,
                          engine=engine_name)  # fmt: skip
    down = download_prefix(f"s3://{bucket}/p", str(tmp_path / "out"), workers=2,
                           connection=conn, engine=engine_name)  # fmt: skip
    assert (up.objects, up.failed, down.objects, down.failed) == (6, {}, 6, {})
    assert {n: (tmp_path / "out" / n).read_bytes() for n in files} == files
    assert proxy.refused <= 4, proxy.refused
