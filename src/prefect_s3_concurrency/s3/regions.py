"""Which region a bucket lives in, found once per process and shared by every engine.

S3 refuses a request signed for another region than the bucket's: 400
``AuthorizationHeaderMalformed`` with ``<Region>`` in the body and an ``x-amz-bucket-region``
header, or (real AWS on a regional or virtual-hosted endpoint) a 301 with that header and no
``Location``. botocore follows such replies itself; the obstore engine and the fast listing
sign requests on their own, so they sign for the region found here:

* a region learnt from a refused request (the fast listing reads the reply), or proved by a
  listing request that S3 accepted, is remembered in :data:`runtime.caches.BUCKET_REGIONS`;
* otherwise one HeadBucket through botocore (which follows the redirects) tells it, from
  its ``x-amz-bucket-region`` header (also on a refused HeadBucket); a server that does not
  say (rclone, most loopback servers) gets the client's own region.

The cache is keyed by endpoint and bucket: one bucket name may live on several servers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from prefect_s3_concurrency.runtime import caches

REGION_HEADER = "x-amz-bucket-region"
DEFAULT_REGION = "us-east-1"
_lock = threading.Lock()
_asking = threading.Lock()
_REGION_XML = re.compile(rb"<(?:\w+:)?Region>\s*([a-z0-9-]{1,40})\s*</(?:\w+:)?Region>")
_REGION_NAME = re.compile(r"^[a-z0-9-]{1,40}$")


def client_region(client: Any) -> str:
    """The region a botocore client signs for (``us-east-1`` when it has none)."""
    return str(getattr(client.meta, "region_name", None) or DEFAULT_REGION)


def endpoint_of(client: Any) -> str:
    """The client's endpoint URL (no credentials in it)."""
    return str(getattr(client.meta, "endpoint_url", None) or "")


def known_region(endpoint: str, bucket: str) -> str | None:
    """The region remembered for ``bucket`` at ``endpoint``, if any."""
    with _lock:
        return caches.BUCKET_REGIONS.get((endpoint, bucket))


def remember_region(endpoint: str, bucket: str, region: str) -> None:
    """Record that ``bucket`` at ``endpoint`` lives in ``region``."""
    with _lock:
        caches.BUCKET_REGIONS[(endpoint, bucket)] = region


def region_from_reply(headers: Mapping[str, str], body: bytes = b"") -> str | None:
    """The bucket's region as a reply states it (header, else ``<Region>`` in an error body)."""
    for name, value in headers.items():
        if name.lower() == REGION_HEADER and _REGION_NAME.match(value.strip()):
            return value.strip()
    found = _REGION_XML.search(body[:8192])
    return found.group(1).decode() if found else None


def _asked_region(client: Any, bucket: str) -> str | None:
    """HeadBucket's ``x-amz-bucket-region`` (botocore follows a wrong-region reply itself)."""
    try:
        resp = client.head_bucket(Bucket=bucket)
    except ClientError as exc:  # S3 states the region on a 403 too
        resp = exc.response
    except BotoCoreError:  # unreachable, no credentials: the transfer reports it
        return None
    if resp.get("BucketRegion"):
        return str(resp["BucketRegion"])
    return region_from_reply(resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}))


def bucket_region(client: Any, bucket: str) -> str:
    """The region to sign requests for ``bucket`` with, found once per endpoint and bucket.

    Args:
        client: The botocore client of the connection (its endpoint and own region).
        bucket: Bucket name.

    Returns:
        The remembered region, else the one HeadBucket states, else the client's region.
    """
    endpoint = endpoint_of(client)
    region = known_region(endpoint, bucket)
    if region is not None:
        return region
    with _asking:  # one HeadBucket, however many requests wait for it
        region = known_region(endpoint, bucket)
        if region is None:
            region = _asked_region(client, bucket) or client_region(client)
            remember_region(endpoint, bucket, region)
    return region


def is_aws(endpoint: str) -> bool:
    """True for Amazon's own S3 endpoints (virtual-hosted addressing, regional hosts)."""
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return not endpoint or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def aws_bucket_url(bucket: str, region: str, endpoint: str = "") -> str:
    """The virtual-hosted URL of ``bucket`` on AWS, on the bucket's own regional host.

    A request to another region's host is answered with a 301 without ``Location``, so the
    host is built from the bucket's region, not taken from the client's endpoint.
    """
    suffix = "amazonaws.com.cn" if endpoint.rstrip("/").endswith(".cn") else "amazonaws.com"
    if "." in bucket:  # a dotted name breaks the host's TLS certificate: path-style
        return f"https://s3.{region}.{suffix}/{bucket}"
    return f"https://{bucket}.s3.{region}.{suffix}/"
