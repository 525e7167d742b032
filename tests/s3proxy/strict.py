"""Amazon S3's rules where rclone and moto are lenient: regions, limits, odd replies.

Each class is a rule of its own; ``StrictS3`` (in ``s3proxy.strict_s3``) bundles them.
Messages, codes and extra elements are the ones Amazon S3 sends.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote, urlsplit

from . import xmlutil
from .exchange import Reply, Request, Rule, s3_error

__all__ = ["Archived", "Complete200Error", "Limits", "Regions", "SseC"]

MiB, GiB = 2**20, 2**30
_CREDENTIAL = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/[^/,\s]+/aws4_request")
_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def signed_region(req: Request) -> tuple[str | None, bool]:
    """Region a SigV4 request was signed for (None if unsigned) and whether presigned."""
    match = _CREDENTIAL.search(req.headers.get("Authorization", "") or "")
    if match:
        return match.group(1), False
    credential = req.query.get("X-Amz-Credential", "").split("/")
    return (credential[2], True) if len(credential) == 5 else (None, False)


class Regions(Rule):
    """Buckets live in regions: a request signed for another region is refused.

    As S3: ``400 AuthorizationHeaderMalformed`` (``AuthorizationQueryParametersError``
    for presigned URLs) with ``<Region>`` in the body and ``x-amz-bucket-region`` on the
    reply; every reply for a bucket carries ``x-amz-bucket-region``, and
    GetBucketLocation answers the bucket's region. The upstream itself checks no region,
    so the signature still validates there.
    """

    def __init__(
        self, bucket_regions: dict[str, str] | None = None, default_region: str = "us-east-1"
    ) -> None:
        """Put ``bucket_regions`` buckets in their regions, the others in ``default_region``."""
        self.bucket_regions = dict(bucket_regions or {})
        self.default_region = default_region

    def region_of(self, bucket: str) -> str:
        """The region of ``bucket``."""
        return self.bucket_regions.get(bucket, self.default_region)

    def on_request(self, req: Request) -> Reply | None:
        """Refuse a request signed for the wrong region."""
        if not req.bucket or req.op == "location":  # GetBucketLocation works from anywhere
            return None
        signed, presigned = signed_region(req)
        expected = self.region_of(req.bucket)
        if signed is None or signed == expected:
            return None
        if presigned:
            code = "AuthorizationQueryParametersError"
            message = "Error parsing the X-Amz-Credential parameter"
        else:
            code, message = "AuthorizationHeaderMalformed", "The authorization header is malformed"
        message += f"; the region '{signed}' is wrong; expecting '{expected}'"
        return s3_error(
            req, 400, code, message, {"Region": expected}, {"x-amz-bucket-region": expected}
        )

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """GetBucketLocation's answer is rewritten."""
        return req.op == "location" and reply.ok

    def on_response(self, req: Request, reply: Reply) -> None:
        """Add ``x-amz-bucket-region``; answer GetBucketLocation with the region."""
        if not req.bucket:
            return
        region = self.region_of(req.bucket)
        reply.headers.set("x-amz-bucket-region", region)
        if req.op == "location" and reply.ok and reply.body is not None:
            constraint = "" if region == "us-east-1" else region
            reply.body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<LocationConstraint xmlns="{_S3_NS}">{constraint}</LocationConstraint>'
            ).encode()


class Limits(Rule):
    """S3's size and count limits, scaled by the constructor (defaults: Amazon S3's)."""

    def __init__(
        self,
        max_parts: int = 10_000,
        min_part_size: int = 5 * MiB,
        max_part_size: int = 5 * GiB,
        max_put_size: int = 5 * GiB,
        max_delete_keys: int = 1000,
    ) -> None:
        """Set the limits (bytes for sizes)."""
        self.max_parts = max_parts
        self.min_part_size = min_part_size
        self.max_part_size = max_part_size
        self.max_put_size = max_put_size
        self.max_delete_keys = max_delete_keys
        self._sizes: dict[str, dict[int, int]] = {}  # upload id -> part number -> bytes
        self._lock = threading.Lock()

    def on_request(self, req: Request) -> Reply | None:
        """Check part numbers and announced sizes; ask for the bodies checked at the end."""
        if req.op in ("part", "part_copy"):
            number = req.query.get("partNumber", "")
            if not number.isdigit() or not 1 <= int(number) <= self.max_parts:
                return s3_error(
                    req, 400, "InvalidArgument",
                    f"Part number must be an integer between 1 and {self.max_parts}, inclusive",
                    {"ArgumentName": "partNumber", "ArgumentValue": number},
                )  # fmt: skip
        if req.op in ("put", "part"):
            if req.body_length is not None and req.body_length > self._max_size(req):
                return self._too_large(req, req.body_length)
            if req.body_length is None:
                req.observe(lambda piece: None)  # count the payload bytes (req.received)
        if req.op in ("complete", "delete_objects"):
            req.buffer_body = True
        return None

    def on_request_end(self, req: Request) -> Reply | None:
        """Check a streamed size, the keys of a DeleteObjects, the parts of a complete."""
        if req.op in ("put", "part") and req.body_length is None:
            if req.received > self._max_size(req):
                return self._too_large(req, req.received)
        if req.op == "delete_objects":
            keys = len(xmlutil.elements(xmlutil.text(req.body or b""), "Object"))
            if keys > self.max_delete_keys:
                message = (
                    "The XML you provided was not well-formed or did not validate against "
                    "our published schema"
                )
                return s3_error(req, 400, "MalformedXML", message)
        if req.op == "complete":
            return self._check_parts(req)
        return None

    def on_response(self, req: Request, reply: Reply) -> None:
        """Remember part sizes; forget them when the upload ends."""
        upload = req.query.get("uploadId", "")
        if not reply.ok:
            return
        with self._lock:
            if req.op == "part":
                size = req.body_length if req.body_length is not None else req.received
                self._sizes.setdefault(upload, {})[int(req.query["partNumber"])] = size
            elif req.op == "abort" or (req.op == "complete" and not xmlutil.is_error(reply.body)):
                self._sizes.pop(upload, None)

    def _max_size(self, req: Request) -> int:
        return self.max_put_size if req.op == "put" else self.max_part_size

    def _too_large(self, req: Request, size: int) -> Reply:
        return s3_error(
            req, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size",
            {"ProposedSize": str(size), "MaxSizeAllowed": str(self._max_size(req))},
        )  # fmt: skip

    def _check_parts(self, req: Request) -> Reply | None:
        parts = xmlutil.complete_parts(xmlutil.text(req.body or b""))
        with self._lock:
            sizes = dict(self._sizes.get(req.query.get("uploadId", ""), {}))
        for number, etag in parts[:-1]:
            size = sizes.get(number)
            if size is not None and size < self.min_part_size:
                return s3_error(
                    req, 400, "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                    {"ProposedSize": str(size), "MinSizeAllowed": str(self.min_part_size),
                     "PartNumber": str(number), "ETag": etag},
                )  # fmt: skip
        return None


class Complete200Error(Rule):
    """The first ``count`` CompleteMultipartUploads get ``200 OK`` with an ``<Error>`` body.

    S3 does this when a complete fails after it started answering; the upload stays in
    progress (the request is not forwarded), so a retried complete succeeds.
    """

    def __init__(self, count: int = 0) -> None:
        """Fail the next ``count`` completes this way."""
        self.remaining = count
        self.sent = 0
        self._lock = threading.Lock()

    def on_request_end(self, req: Request) -> Reply | None:
        """Answer a complete with the 200 error while any remain."""
        if req.op != "complete":
            return None
        with self._lock:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
            self.sent += 1
        reply = s3_error(
            req, 500, "InternalError", "We encountered an internal error. Please try again."
        )
        reply.status = 200
        return reply


class Archived(Rule):
    """Objects in an archive storage class: ``{"bucket/key": "GLACIER"}``.

    GET (and copying from them) answers ``403 InvalidObjectState``; HEAD and listings show
    the storage class.
    """

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        """Archive ``keys`` (``bucket/key`` -> storage class)."""
        self.keys = dict(keys or {})

    def on_request(self, req: Request) -> Reply | None:
        """Refuse to read an archived object."""
        storage = self.keys.get(req.target) if req.op == "get" else None
        if req.op in ("copy", "part_copy"):
            source = unquote(urlsplit(req.headers.get("x-amz-copy-source", "") or "").path)
            storage = self.keys.get(source.lstrip("/"))
        if storage is None:
            return None
        return s3_error(
            req, 403, "InvalidObjectState",
            "The operation is not valid for the object's storage class",
            {"StorageClass": storage},
        )  # fmt: skip

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Listings of a bucket holding archived objects are rewritten."""
        prefix = req.bucket + "/"
        return req.op == "list" and reply.ok and any(k.startswith(prefix) for k in self.keys)

    def on_response(self, req: Request, reply: Reply) -> None:
        """Show the storage class on HEAD and in listings."""
        if req.op == "head" and reply.ok and req.target in self.keys:
            reply.headers.set("x-amz-storage-class", self.keys[req.target])
        if req.op != "list" or reply.body is None or not reply.ok:
            return
        url_encoded = req.query.get("encoding-type") == "url"

        def edit(block: str) -> str:
            key = xmlutil.listed_key(block, url_encoded)
            storage = self.keys.get(f"{req.bucket}/{key}")
            return block if storage is None else xmlutil.set_element(block, "StorageClass", storage)

        body = xmlutil.map_blocks(xmlutil.text(reply.body), "Contents", edit)
        reply.body = body.encode("utf-8", "surrogateescape")


class SseC(Rule):
    """Objects stored with customer-provided keys (SSE-C): ``{"bucket/key", ...}``.

    GET and HEAD without the SSE-C headers get ``400 InvalidRequest``; with them, the
    reply echoes the algorithm and key MD5 as S3 does.
    """

    ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
    KEY_MD5 = "x-amz-server-side-encryption-customer-key-MD5"

    def __init__(self, keys: set[str] | None = None) -> None:
        """Treat ``keys`` (``bucket/key``) as SSE-C objects."""
        self.keys = set(keys or ())

    def on_request(self, req: Request) -> Reply | None:
        """Refuse to read an SSE-C object without its key."""
        if req.op not in ("get", "head") or req.target not in self.keys:
            return None
        if self.ALGORITHM in req.headers:
            return None
        return s3_error(
            req, 400, "InvalidRequest",
            "The object was stored using a form of Server Side Encryption. "
            "The correct parameters must be provided to retrieve the object.",
        )  # fmt: skip

    def on_response(self, req: Request, reply: Reply) -> None:
        """Echo the SSE-C headers."""
        if reply.ok and req.target in self.keys and self.ALGORITHM in req.headers:
            reply.headers.set(self.ALGORITHM, req.headers.get(self.ALGORITHM) or "AES256")
            if self.KEY_MD5 in req.headers:
                reply.headers.set(self.KEY_MD5, req.headers.get(self.KEY_MD5) or "")
