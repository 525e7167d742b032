"""Fast ListObjectsV2: botocore signs the request, C ElementTree parses the reply.

botocore's own response parsing costs ~0.3 ms per listed key (it walks its shape model in
Python and, for every S3 200 reply, parses the whole body once more to look for an embedded
error): 0.3-0.5 s for 1,000 keys on a busy 2-core machine, 10x what object_store takes.
``object_store`` cannot list exactly, though (it turns the folder marker ``a/`` into ``a``
and aborts on keys it cannot name). So each page is a GET signed by botocore's public SigV4
signer (``botocore.auth.S3SigV4Auth``) with the credentials of the boto3 session that made
the client, for the bucket's region (:mod:`s3.regions`; a page refused for another region is
signed again for the one S3 names), at the client's endpoint (path-style for custom
endpoints, the bucket's regional host on AWS, ``encoding-type=url`` as botocore sends it, so
every key survives XML), sent with urllib3 and parsed with :mod:`xml.etree.ElementTree`.

Any trouble (an error reply, a truncated body, no credentials given) makes the
caller list with botocore instead, which retries and turns errors into clear one-line
messages. Elements are matched by local name, whatever XML namespace a server uses. A reply
that is not a listing, a page that says "more" without a continuation token, or a token
that repeats raises :class:`ListingError`: a listing is never cut short silently. Never used
while moto's in-process ``mock_aws`` is active: it patches botocore only, so a plain HTTP
request would leave it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

from prefect_s3_concurrency.errors import ListingError
from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.connection import moto_mock_active
from prefect_s3_concurrency.s3.etag import unquote
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.s3.regions import (
    aws_bucket_url,
    client_region,
    endpoint_of,
    is_aws,
    known_region,
    region_from_reply,
    remember_region,
)

MAX_PAGES = 10**6


@caches.cached(maxsize=1)
def _http() -> urllib3.PoolManager:
    """The HTTP pool of the fast listing (one per process)."""
    retry = urllib3.Retry(  # a GET: safe to repeat (stale keep-alive, 5xx)
        total=3, backoff_factor=0.05, status_forcelist=(500, 502, 503, 504),
        raise_on_status=False,
    )  # fmt: skip
    return urllib3.PoolManager(
        num_pools=8, maxsize=4, retries=retry, timeout=urllib3.Timeout(10, 60)
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # any namespace (S3's, s3rver's, none)


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in node if _local(child.tag) == name]


def _text(node: ET.Element, name: str, required: bool = False) -> str:
    found = _children(node, name)
    if not found:
        if required:
            raise ListingError(f"listing reply without <{name}>: not a ListObjectsV2 reply")
        return ""
    return found[0].text or ""


class _RegionRefused(Exception):
    """S3 refused the page as signed for the wrong region, and said which one is right."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.region = region


def bucket_url(endpoint: str, bucket: str, region: str) -> str:
    """The URL to list ``bucket`` at: on AWS its own regional host, else path-style."""
    if is_aws(endpoint):
        return aws_bucket_url(bucket, region, endpoint)
    return f"{endpoint.rstrip('/')}/{quote(bucket)}"


def signed_page_request(
    credentials: Any, endpoint: str, bucket: str, region: str, query: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The URL and SigV4-signed headers of one ListObjectsV2 GET (nothing is sent).

    Args:
        credentials: botocore credentials (``get_frozen_credentials()`` is called).
        endpoint: The client's endpoint URL ("" for AWS's default).
        bucket: Bucket name.
        region: The region to sign for: the bucket's.
        query: The query parameters.
    """
    qs = urlencode(sorted(query.items()), quote_via=quote, safe="-_.~")
    url = f"{bucket_url(endpoint, bucket, region)}?{qs}"
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(credentials.get_frozen_credentials(), "s3", region).add_auth(request)
    return url, dict(request.headers.items())


def _page(
    client: Any, credentials: Any, bucket: str, prefix: str, token: str | None
) -> tuple[list[S3Object], str]:
    query = {"list-type": "2", "encoding-type": "url", "max-keys": "1000", "prefix": prefix}
    if token:
        query["continuation-token"] = token
    endpoint = endpoint_of(client)
    region = known_region(endpoint, bucket) or client_region(client)
    url, headers = signed_page_request(credentials, endpoint, bucket, region, query)
    resp = _http().request("GET", url, headers=headers, redirect=False)
    if resp.status in (301, 400):
        stated = region_from_reply(resp.headers, resp.data)
        if stated and stated != region:
            raise _RegionRefused(stated)
    if resp.status != 200:
        raise ValueError(f"HTTP {resp.status}")
    remember_region(endpoint, bucket, region)  # S3 accepted this region's signature
    root = ET.fromstring(resp.data)  # a truncated body raises ParseError
    if _local(root.tag) != "ListBucketResult":
        raise ValueError(f"unexpected reply {_local(root.tag)}")
    encoded = _text(root, "EncodingType") == "url"
    found = []
    for item in _children(root, "Contents"):
        key = _text(item, "Key", required=True)
        found.append(
            S3Object(
                unquote_plus(key) if encoded else key,
                int(_text(item, "Size", required=True)),
                unquote(_text(item, "ETag")),
                epoch(_text(item, "LastModified")),
                _text(item, "StorageClass"),
            )
        )
    truncated = _text(root, "IsTruncated", required=True).strip().lower()
    if truncated not in ("true", "false"):
        raise ListingError(f"listing reply with IsTruncated={truncated!r}")
    return found, _next_token(truncated == "true", _text(root, "NextContinuationToken"))


def epoch(value: str | datetime | None) -> float | None:
    """A listing's LastModified (ISO 8601 text or a datetime) as epoch seconds; None if absent
    or unreadable (then skip-existing cannot compare times)."""
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).strip()).timestamp() if value else None
    except ValueError:
        return None


def listed_object(item: dict[str, Any]) -> S3Object:
    """An S3Object from one botocore ``Contents`` entry."""
    return S3Object(
        item["Key"], int(item["Size"]), unquote(item.get("ETag")),
        epoch(item.get("LastModified")), str(item.get("StorageClass") or ""),
    )  # fmt: skip


def _next_token(more: bool, token: str | None) -> str:
    """Return where the listing continues ("" at its end); "more" with no token is an error."""
    if more and not token:
        raise ListingError(
            "the listing says it is truncated but gives no continuation token: "
            "refusing to treat it as complete"
        )
    return token or "" if more else ""


def _botocore_page(
    client: Any, bucket: str, prefix: str, token: str | None
) -> tuple[list[S3Object], str]:
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if token:
        kwargs["ContinuationToken"] = token
    resp = client.list_objects_v2(**kwargs)
    if "IsTruncated" not in resp:
        raise ListingError("listing reply without IsTruncated: not a ListObjectsV2 reply")
    found = [listed_object(item) for item in resp.get("Contents", [])]
    return found, _next_token(bool(resp["IsTruncated"]), resp.get("NextContinuationToken"))


def _fast_page(
    client: Any, credentials: Any, bucket: str, prefix: str, token: str | None
) -> tuple[list[S3Object], str]:
    """One page by the signed GET; signed again for the region S3 names if it refuses."""
    try:
        return _page(client, credentials, bucket, prefix, token)
    except _RegionRefused as refused:
        remember_region(endpoint_of(client), bucket, refused.region)
        return _page(client, credentials, bucket, prefix, token)


def list_pages(
    client: Any, bucket: str, prefix: str, credentials: Any = None
) -> Iterator[list[S3Object]]:
    """Yield every object under ``prefix`` (folder markers included), one page at a time.

    Pages come from the fast signed GET; from the first page that has any trouble on, from
    botocore (with its retries and errors), resuming at the same continuation token.

    Args:
        client: The botocore S3 client (its endpoint and region; botocore's own listing).
        bucket: Bucket name.
        prefix: Key prefix.
        credentials: The botocore credentials the client was made with (its boto3 session's
            ``get_credentials()``); None: botocore lists every page.
    """
    fast = credentials is not None and not moto_mock_active()
    token: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_PAGES):
        found: list[S3Object] | None = None
        if fast:
            try:
                found, next_token = _fast_page(client, credentials, bucket, prefix, token)
            except Exception:  # noqa: BLE001 - botocore lists instead, with its retries
                fast = False
        if found is None:
            found, next_token = _botocore_page(client, bucket, prefix, token)
        yield found
        if not next_token:
            return
        if next_token in seen:
            raise ListingError(
                "the listing repeated a continuation token (it would never end): stopped"
            )
        seen.add(next_token)
        token = next_token
    raise ListingError(f"the listing did not end after {MAX_PAGES:,} pages: stopped")
