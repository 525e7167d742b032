"""SSE-KMS buckets: ETags that are not the MD5 of the data, as Amazon S3 gives them.

Every ETag a client sees for an object in a KMS bucket (PUT, UploadPart and copy
replies, CompleteMultipartUpload and listing bodies, HEAD and GET headers) is replaced by
a deterministic 32-hex value that is not the MD5 (``md5(b"kms:" + real ETag)``;
multipart ETags keep their ``-<parts>`` suffix). Replies carry the SSE-KMS headers.

The proxy keeps a map back to the upstream's real ETags: ETags a client sends
(``If-Match``/``If-None-Match``, the parts of a CompleteMultipartUpload) are translated
before forwarding. As S3, ETags are compared exactly: a value the proxy never handed out
(lower-cased, unquoted, the MD5 a client computed) matches no object.
"""

from __future__ import annotations

import hashlib
import threading
import uuid

from . import xmlutil
from .exchange import Headers, Reply, Request, Rule, s3_error

__all__ = ["KmsEtags"]

_NEVER = '"kms-proxy-unknown-etag"'  # matches no upstream object
_CONDITIONS = ("If-Match", "If-None-Match")
_XML_ETAGS = ("list", "list_parts", "complete", "copy", "part_copy")
_SSE_OPS = ("put", "part", "create_mpu", "complete", "copy", "part_copy", "get", "head")


class KmsEtags(Rule):
    """Objects in ``buckets`` behave as if encrypted with SSE-KMS."""

    def __init__(self, buckets: set[str] | None = None, key_id: str | None = None) -> None:
        """Treat ``buckets`` as SSE-KMS buckets, encrypted with ``key_id`` (an ARN)."""
        self.buckets = set(buckets or ())
        self.key_id = key_id or (
            "arn:aws:kms:us-east-1:111122223333:key/"
            + str(uuid.uuid5(uuid.NAMESPACE_URL, "s3proxy-kms"))
        )
        self._real: dict[str, str] = {}  # ETag as handed out -> upstream ETag
        self._completed: dict[str, str] = {}  # bucket/key -> ETag its complete handed out
        self._lock = threading.Lock()

    def fake(self, real: str, target: str = "") -> str:
        """The ETag a client sees for upstream ETag ``real`` (remembered for the way back).

        An upstream that reads back a completed multipart object with another ETag than
        its complete gave (rclone: the MD5 of the data) gets the complete's, as S3 does.
        """
        real = _quoted(real)  # S3 quotes every ETag (rclone's listings do not)
        with self._lock:
            completed = self._completed.get(target)
            if completed is not None and "-" not in real:
                self._real[completed] = real
                return completed
        bare = real[1:-1]
        _, dash, parts = bare.partition("-")
        fake = hashlib.md5(b"kms:" + bare.encode(), usedforsecurity=False).hexdigest()
        fake = f'"{fake}-{parts}"' if dash else f'"{fake}"'
        with self._lock:
            self._real[fake] = real
        return fake

    def real(self, fake: str) -> str | None:
        """The upstream ETag of one handed out, compared exactly (None if never seen)."""
        with self._lock:
            return self._real.get(fake)

    def on_request(self, req: Request) -> Reply | None:
        """Translate conditions and a complete's part ETags back to the upstream's."""
        if req.bucket not in self.buckets:
            return None
        req.state[self._key] = True
        for name in _CONDITIONS:
            value = req.headers.get(name)
            if value is None or value.strip() == "*":
                continue
            real = self.real(value.strip()) or _NEVER
            req.state[f"{self._key}:{name}"] = real
            req.headers.set(name, real)
        if req.op == "complete":
            req.replace_body(self._real_parts)
        return None

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Replies with ETags in their XML are read."""
        return req.state.get(self._key, False) and req.op in _XML_ETAGS

    def on_response(self, req: Request, reply: Reply) -> None:
        """Check conditions, hide the real ETags, add the SSE-KMS headers."""
        if not req.state.get(self._key):
            return
        failed = self._failed_condition(req, reply)
        if failed is not None:
            reply.become(failed)
        etag = reply.headers.get("ETag")
        if etag:
            reply.headers.set("ETag", self.fake(etag, req.target))
        if reply.body is not None and req.op in _XML_ETAGS:
            reply.body = self._fake_xml(req, reply.body).encode("utf-8", "surrogateescape")
        if reply.ok and req.op in ("put", "copy", "delete", "complete"):
            self._remember(req, reply)
        if reply.ok and req.op in _SSE_OPS and not xmlutil.is_error(reply.body):
            reply.headers.set("x-amz-server-side-encryption", "aws:kms")
            reply.headers.set("x-amz-server-side-encryption-aws-kms-key-id", self.key_id)

    @property
    def _key(self) -> str:
        return f"kms:{id(self)}"

    def _fake_xml(self, req: Request, body: bytes) -> str:
        text = xmlutil.text(body)
        if req.op != "list":
            return xmlutil.map_elements(text, "ETag", self.fake)
        url_encoded = req.query.get("encoding-type") == "url"

        def contents(block: str) -> str:
            target = f"{req.bucket}/{xmlutil.listed_key(block, url_encoded)}"
            return xmlutil.map_elements(block, "ETag", lambda etag: self.fake(etag, target))

        return xmlutil.map_blocks(text, "Contents", contents)

    def _remember(self, req: Request, reply: Reply) -> None:
        """Note the ETag a complete handed out; forget it when the object changes."""
        etag = None
        if req.op == "complete" and not xmlutil.is_error(reply.body):
            etag = xmlutil.element(xmlutil.text(reply.body or b""), "ETag")
        with self._lock:
            if etag:
                self._completed[req.target] = etag
            else:
                self._completed.pop(req.target, None)

    def _real_parts(self, body: bytes) -> bytes:
        """A complete's body with the part ETags handed out replaced by the upstream's."""
        text = xmlutil.map_elements(xmlutil.text(body), "ETag", self.real)
        return text.encode("utf-8", "surrogateescape")

    def _failed_condition(self, req: Request, reply: Reply) -> Reply | None:
        """S3's answer to a GET/HEAD whose condition fails (None: it holds).

        The upstream may check the translated conditions itself; this checks them again
        against the upstream's ETag in case it ignores them.
        """
        if req.op not in ("get", "head") or not reply.ok:
            return None
        etag = _quoted(reply.headers.get("ETag") or "")
        wanted = req.state.get(f"{self._key}:If-Match")
        if wanted is not None and wanted != etag:
            return s3_error(
                req, 412, "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
                {"Condition": "If-Match"},
            )  # fmt: skip
        unwanted = req.state.get(f"{self._key}:If-None-Match")
        if unwanted is not None and unwanted == etag:
            headers = Headers(kv for kv in reply.headers if kv[0].lower() != "content-length")
            return Reply(304, headers, b"", "Not Modified", made_by=type(self).__name__)
        return None


def _quoted(etag: str) -> str:
    """``etag`` in double quotes, as S3 sends ETags."""
    return etag if len(etag) >= 2 and etag[0] == etag[-1] == '"' else f'"{etag}"'
