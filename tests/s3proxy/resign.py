"""SigV4 re-signing of a request whose signed headers or body a rule edited.

An upstream that checks signatures (rclone serve s3) refuses a request once a signed
header changed (an ``If-Match`` translated back to the upstream's ETag, a rewritten
CompleteMultipartUpload body). Given the secret key of the request's access key, the
proxy signs it again: same access key, date, region, service and signed header names,
the edited values. Header-signed requests only (``Authorization: AWS4-HMAC-SHA256``);
chunk-signed streaming bodies (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``) are left alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import quote, unquote, urlsplit

from .checksums import ALGORITHMS, Digest
from .exchange import Headers

__all__ = ["refresh_body_digests", "resign"]

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/]+)/(?P<scope>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)"
)


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def resign(method: str, path: str, headers: Headers, secrets: dict[str, str]) -> bool:
    """Sign ``headers`` again in place; False if it cannot (unsigned, unknown key, ...)."""
    match = _AUTH.fullmatch((headers.get("Authorization") or "").strip())
    payload = headers.get("x-amz-content-sha256") or ""
    if match is None or match["key"] not in secrets or payload.startswith("STREAMING-AWS4"):
        return False
    scope, amz_date = match["scope"], headers.get("x-amz-date") or ""
    names = [n for n in match["signed"].split(";") if n in headers]
    canonical_headers = "".join(
        f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in names
    )
    parts = urlsplit(path)
    canonical = "\n".join(
        [method, parts.path or "/", _canonical_query(parts.query), canonical_headers,
         ";".join(names), payload or hashlib.sha256(b"").hexdigest()]
    )  # fmt: skip
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secrets[match["key"]]).encode()
    for part in scope.split("/")[:4]:  # date, region, service, aws4_request
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers.set(
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={match['key']}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}",
    )
    return True


def refresh_body_digests(headers: Headers, body: bytes) -> None:
    """Recompute the body digests a request announces, after its body was edited."""
    if re.fullmatch(r"[0-9a-f]{64}", headers.get("x-amz-content-sha256") or ""):
        headers.set("x-amz-content-sha256", hashlib.sha256(body).hexdigest())
    if "Content-MD5" in headers:
        headers.set("Content-MD5", base64.b64encode(hashlib.md5(body).digest()).decode())
    for algorithm in ALGORITHMS:
        if f"x-amz-checksum-{algorithm}" in headers:
            digest = Digest(algorithm)
            digest.update(body)
            headers.set(f"x-amz-checksum-{algorithm}", digest.b64())

