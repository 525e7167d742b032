"""Listings that cannot be trusted are errors, never "empty" or "the end" (both list paths)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy

from prefect_s3_concurrency.errors import ListingError
from prefect_s3_concurrency.s3.engines import Boto3Engine, listing
from prefect_s3_concurrency.s3.transfer import iter_objects

KEYS = ["p/a.txt", "p/b.txt", "p/c/d.txt"]
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
S3RVER_NS = "http://doc.s3.amazonaws.com/2006-03-01/"


@pytest.fixture(scope="module")
def seeded(rclone_s3) -> Iterator[tuple[FaultProxy, str]]:
    """A bucket holding KEYS, reached through a proxy whose listing rewrite a test sets."""
    client = rclone_s3.client()
    bucket = f"listing-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    for key in KEYS:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    with FaultProxy(rclone_s3.endpoint_url) as proxy:
        yield proxy, bucket


def _listings_only(edit: Callable[[bytes], bytes]) -> Callable[[str, str, bytes], bytes]:
    return lambda method, path, body: edit(body) if "list-type=2" in path else body


def _proxied(rclone_s3, url: str) -> Boto3Engine:
    """An engine through the proxy, with the session's credentials for the fast listing."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=rclone_s3.access_key, aws_secret_access_key=rclone_s3.secret_key,
        region_name=rclone_s3.region,
    )  # fmt: skip
    client = session.client(
        "s3", endpoint_url=url,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )  # fmt: skip
    return Boto3Engine(client, credentials=session.get_credentials())


@pytest.fixture(params=["fast", "botocore"])
def list_path(request, monkeypatch) -> Iterator[str]:
    """Run a test on the fast signed GET and on botocore's own listing."""
    pages: list[object] = []
    fast_page = listing._page
    if request.param == "botocore":
        monkeypatch.setattr(listing, "_page", _refuse)
    else:
        monkeypatch.setattr(listing, "_page", lambda *a: pages.append(a) or fast_page(*a))
    yield request.param
    assert pages or request.param == "botocore"  # the fast path really ran


def _refuse(*_args: object) -> None:
    raise ValueError("fast listing off for this test")


def _keys(engine: Boto3Engine, bucket: str) -> list[str]:
    try:
        return [o.key for page in iter_objects(engine, bucket, "p/") for o in page]
    finally:
        engine.close()


def test_plain_listing(seeded, rclone_s3, list_path) -> None:
    proxy, bucket = seeded
    proxy.rewrite = None
    assert _keys(_proxied(rclone_s3, proxy.endpoint_url), bucket) == KEYS


def test_other_xml_namespace_is_read(seeded, rclone_s3, list_path) -> None:
    """s3rver answers in another namespace: the same objects, not an empty listing."""
    proxy, bucket = seeded
    proxy.rewrite = _listings_only(lambda b: b.replace(S3_NS.encode(), S3RVER_NS.encode()))
    assert _keys(_proxied(rclone_s3, proxy.endpoint_url), bucket) == KEYS


def _truncated_without_token(body: bytes) -> bytes:
    body = re.sub(rb"<NextContinuationToken>[^<]*</NextContinuationToken>", b"", body)
    return body.replace(b"<IsTruncated>false</IsTruncated>", b"<IsTruncated>true</IsTruncated>")


def _same_token(body: bytes) -> bytes:
    """Every page continues at the same token (rclone's tokens are base64 of the last key)."""
    token = base64.b64encode(KEYS[0].encode())
    tag = b"<NextContinuationToken>%s</NextContinuationToken>" % token
    return _truncated_without_token(body).replace(b"</IsTruncated>", b"</IsTruncated>" + tag)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_truncated_without_token, "gives no continuation token"),
        (_same_token, "repeated a continuation token"),
        (lambda b: re.sub(rb"<IsTruncated>[^<]*</IsTruncated>", b"", b), "IsTruncated"),
    ],
    ids=["more-without-token", "repeated-token", "no-IsTruncated"],
)
def test_untrustworthy_listing_is_an_error(seeded, rclone_s3, list_path, edit, message) -> None:
    proxy, bucket = seeded
    proxy.rewrite = _listings_only(edit)
    with pytest.raises(ListingError, match=message):
        _keys(_proxied(rclone_s3, proxy.endpoint_url), bucket)


def test_sync_deletes_nothing_on_a_listing_without_token(
    seeded, rclone_block: str, tmp_path: Path
) -> None:
    """The reported data loss: a truncated page without a token once made sync delete files."""
    from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix
    from prefect_s3_concurrency.s3.connection import S3Connection

    proxy, bucket = seeded
    proxy.rewrite = _listings_only(_truncated_without_token)
    dest = tmp_path / "dest"
    for rel in ["a.txt", "b.txt", "c/d.txt", "extra.txt"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text("local")
    conn = S3Connection(credentials_block=rclone_block, endpoint_url=proxy.endpoint_url)
    with pytest.raises((ListingError, TransferFailed), match="continuation token"):
        download_prefix(f"s3://{bucket}/p", str(dest), delete_extra=True, connection=conn)
    left = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert left == ["a.txt", "b.txt", "c/d.txt", "extra.txt"]
