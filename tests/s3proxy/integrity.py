"""Checksums as Amazon S3 handles them, in front of servers that ignore or forget them.

* A PUT or UploadPart carrying ``x-amz-checksum-<algorithm>`` (a header, or an
  aws-chunked trailer announced by ``x-amz-trailer``) or ``Content-MD5`` is verified as it
  streams by: ``400 BadDigest`` on a mismatch, ``InvalidDigest``/``InvalidRequest`` for a
  malformed value. The upstream never gets the whole body of a refused request.
* The checksum is stored per ``bucket/key`` and returned on HEAD/GET with
  ``x-amz-checksum-mode: ENABLED`` (plus ``x-amz-checksum-type``), unless the upstream
  returned one of another algorithm itself (rclone keeps the checksum headers of a PUT as
  metadata; moto stores and returns them, but neither verifies them, and moto's value
  for a multipart upload lacks the ``-<parts>`` and the type). Multipart uploads:
  CreateMultipartUpload's ``x-amz-checksum-algorithm``/``x-amz-checksum-type`` decide
  between a FULL_OBJECT checksum (the part CRCs combined; a CompleteMultipartUpload
  header is verified against it) and a COMPOSITE one (the checksum of the part
  checksums, then ``-<parts>``).
* ``add_default_crc64nvme``: an upload without any checksum gets a full-object CRC64NVME,
  as S3 has done since 2025.
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from . import xmlutil
from .checksums import ALGORITHMS, Digest, composite, decode, full_object, label
from .exchange import Headers, Reply, Request, Rule, s3_error

__all__ = ["Checksums"]

_PREFIX = "x-amz-checksum-"
_DEFAULT = "crc64nvme"


@dataclass
class _Part:
    size: int
    crcs: dict[str, int]
    digests: dict[str, bytes]


@dataclass
class _Upload:
    algorithm: str | None
    kind: str | None  # FULL_OBJECT | COMPOSITE
    parts: dict[int, _Part] = field(default_factory=dict)


@dataclass
class _Payload:
    claims: dict[str, str | None]  # algorithm -> value sent (None: in the trailer)
    md5: bytes | None
    digests: dict[str, Digest]


class Checksums(Rule):
    """Verifies, stores and returns checksums (see the module docstring)."""

    def __init__(self, verify: bool = True, add_default_crc64nvme: bool = True) -> None:
        """Verify checksums sent (``verify``), store a default CRC64NVME for the others."""
        self.verify = verify
        self.add_default_crc64nvme = add_default_crc64nvme
        self.objects: dict[str, tuple[str, str, str]] = {}  # target -> algorithm, value, type
        self._etags: dict[str, str] = {}  # target -> ETag it had when read first
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

    def on_request(self, req: Request) -> Reply | None:
        """Start the digests of an upload's payload; ask for the XML bodies needed."""
        if req.op in ("put", "part"):
            return self._start(req)
        if req.op in ("complete", "delete_objects"):
            req.buffer_body = True
        return None

    def on_request_end(self, req: Request) -> Reply | None:
        """Verify an upload's payload, or a complete's full-object checksum."""
        if req.op in ("put", "part") and self.verify:
            return self._check_payload(req, req.state[self._key])
        if req.op == "complete":
            return self._check_complete(req)
        return None

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """CreateMultipartUpload (its UploadId) and complete (a 200 error?) are read."""
        return req.op in ("create_mpu", "complete") and reply.ok

    def on_response(self, req: Request, reply: Reply) -> None:
        """Store what an upload stored; return it on HEAD/GET with checksum mode."""
        if not reply.ok:
            return
        handler = getattr(self, f"_{req.op}_done", None)
        if handler is not None:
            handler(req, reply)

    @property
    def _key(self) -> str:
        return f"checksums:{id(self)}"

    def _start(self, req: Request) -> Reply | None:
        claims: dict[str, str | None] = {}
        for algorithm in ALGORITHMS:
            value = req.headers.get(_PREFIX + algorithm)
            if value is not None:
                if decode(algorithm, value) is None:
                    message = f"Value for {_PREFIX}{algorithm} header is invalid."
                    return s3_error(req, 400, "InvalidRequest", message)
                claims[algorithm] = value.strip()
        trailer = (req.headers.get("x-amz-trailer") or "").strip().lower()
        if trailer.startswith(_PREFIX) and trailer[len(_PREFIX) :] in ALGORITHMS:
            claims.setdefault(trailer[len(_PREFIX) :], None)
        md5 = None
        if (md5_text := req.headers.get("Content-MD5")) is not None:
            md5 = _md5(md5_text)
            if md5 is None:
                return s3_error(
                    req, 400, "InvalidDigest", "The Content-MD5 you specified was invalid."
                )
        wanted = set(claims) | ({"md5"} if md5 else set())
        upload = self._upload(req)
        if upload is not None and upload.algorithm:
            wanted.add(upload.algorithm)
        elif self.add_default_crc64nvme and (req.op == "part" or not claims):
            wanted.add(_DEFAULT)
        digests = {algorithm: Digest(algorithm) for algorithm in wanted}
        req.state[self._key] = _Payload(claims, md5, digests)

        def update(piece: bytes) -> None:
            for digest in digests.values():
                digest.update(piece)

        req.observe(update)
        return None

    def _upload(self, req: Request) -> _Upload | None:
        with self._lock:
            return self._uploads.get(req.query.get("uploadId", ""))

    def _check_payload(self, req: Request, payload: _Payload) -> Reply | None:
        if payload.md5 is not None and payload.digests["md5"].digest() != payload.md5:
            return s3_error(
                req, 400, "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
                {"ExpectedDigest": payload.md5.hex(),
                 "CalculatedDigest": payload.digests["md5"].b64()},
            )  # fmt: skip
        for algorithm, value in list(payload.claims.items()):
            if value is None:  # sent in the trailer
                value = req.trailers.get(_PREFIX + algorithm)
                if value is None:
                    message = f"The {label(algorithm)} checksum trailer is missing."
                    return s3_error(req, 400, "InvalidRequest", message)
                payload.claims[algorithm] = value
            if payload.digests[algorithm].b64() != value.strip():
                return _mismatch(req, algorithm)
        return None

    def _final(self, req: Request) -> tuple[str, str, str] | None:
        """The checksum a complete gives the object, from the parts (None: unknown)."""
        upload = self._upload(req)
        numbers = [n for n, _etag in xmlutil.complete_parts(xmlutil.text(req.body or b""))]
        if upload is None or not numbers or any(n not in upload.parts for n in numbers):
            return None
        parts = [upload.parts[n] for n in numbers]
        algorithm = upload.algorithm or (_DEFAULT if self.add_default_crc64nvme else None)
        if algorithm is None or any(algorithm not in p.digests for p in parts):
            return None
        if upload.algorithm and upload.kind != "FULL_OBJECT":
            return algorithm, composite(algorithm, [p.digests[algorithm] for p in parts]), (
                "COMPOSITE"
            )
        if ALGORITHMS[algorithm][1] is None:
            return None  # SHA full-object checksums do not combine
        value = full_object(algorithm, [(p.crcs[algorithm], p.size) for p in parts])
        return algorithm, value, "FULL_OBJECT"

    def _check_complete(self, req: Request) -> Reply | None:
        final = self._final(req)
        for algorithm in ALGORITHMS:
            claimed = req.headers.get(_PREFIX + algorithm)
            if claimed is None:
                continue
            if final is None:
                kind = (req.headers.get("x-amz-checksum-type") or "FULL_OBJECT").upper()
                final = (algorithm, claimed.strip(), kind)
            elif self.verify and final[:2] != (algorithm, claimed.strip()):
                return _mismatch(req, algorithm)
        req.state[self._key] = final
        return None

    def _put_done(self, req: Request, reply: Reply) -> None:
        payload: _Payload = req.state[self._key]
        algorithm = next(iter(payload.claims), _DEFAULT if _DEFAULT in payload.digests else None)
        if algorithm is None:
            return
        value = payload.claims.get(algorithm) or payload.digests[algorithm].b64()
        with self._lock:
            self.objects[req.target] = (algorithm, value, "FULL_OBJECT")
            self._etags[req.target] = reply.headers.get("ETag") or ""
        reply.headers.setdefault(_PREFIX + algorithm, value)
        reply.headers.setdefault("x-amz-checksum-type", "FULL_OBJECT")

    def _part_done(self, req: Request, reply: Reply) -> None:
        payload: _Payload = req.state[self._key]
        digests = {a: d for a, d in payload.digests.items() if a in ALGORITHMS}
        part = _Part(
            size=req.received,
            crcs={a: d.crc for a, d in digests.items() if ALGORITHMS[a][1] is not None},
            digests={a: d.digest() for a, d in digests.items()},
        )
        with self._lock:
            upload = self._uploads.setdefault(req.query["uploadId"], _Upload(None, None))
            upload.parts[int(req.query["partNumber"])] = part
        for algorithm in payload.claims:
            reply.headers.setdefault(_PREFIX + algorithm, digests[algorithm].b64())

    def _create_mpu_done(self, req: Request, reply: Reply) -> None:
        upload_id = xmlutil.element(xmlutil.text(reply.body or b""), "UploadId")
        algorithm = (req.headers.get("x-amz-checksum-algorithm") or "").lower() or None
        if upload_id is None or (algorithm is not None and algorithm not in ALGORITHMS):
            return
        kind = (req.headers.get("x-amz-checksum-type") or "").upper() or None
        if algorithm is not None and kind is None:
            kind = "FULL_OBJECT" if algorithm == _DEFAULT else "COMPOSITE"
        with self._lock:
            self._uploads[upload_id] = _Upload(algorithm, kind)
        if algorithm is not None and kind is not None:
            reply.headers.setdefault("x-amz-checksum-algorithm", label(algorithm))
            reply.headers.setdefault("x-amz-checksum-type", kind)

    def _complete_done(self, req: Request, reply: Reply) -> None:
        if xmlutil.is_error(reply.body):
            return
        final = req.state.get(self._key)
        with self._lock:
            self._uploads.pop(req.query.get("uploadId", ""), None)
            self._etags.pop(req.target, None)
            if final is not None:
                self.objects[req.target] = final
            else:
                self.objects.pop(req.target, None)

    def _abort_done(self, req: Request, reply: Reply) -> None:
        with self._lock:
            self._uploads.pop(req.query.get("uploadId", ""), None)

    def _delete_done(self, req: Request, reply: Reply) -> None:
        with self._lock:
            self.objects.pop(req.target, None)

    def _delete_objects_done(self, req: Request, reply: Reply) -> None:
        keys = xmlutil.elements(xmlutil.text(req.body or b""), "Key")
        with self._lock:
            for key in keys:
                self.objects.pop(f"{req.bucket}/{key}", None)

    def _copy_done(self, req: Request, reply: Reply) -> None:
        source = unquote(urlsplit(req.headers.get("x-amz-copy-source") or "").path).lstrip("/")
        with self._lock:
            stored = self.objects.get(source)
            self._etags.pop(req.target, None)
            if stored is not None:
                self.objects[req.target] = stored
            else:
                self.objects.pop(req.target, None)

    def _head_done(self, req: Request, reply: Reply) -> None:
        mode = (req.headers.get("x-amz-checksum-mode") or "").upper()
        if mode != "ENABLED" or req.ranged or "partNumber" in req.query:
            return
        with self._lock:
            stored = self.objects.get(req.target)
            # An object replaced behind the proxy's back (straight on the upstream) has
            # another ETag than when it was first read: its checksum is not known then.
            etag = reply.headers.get("ETag") or ""
            if stored is not None and self._etags.setdefault(req.target, etag) != etag:
                del self.objects[req.target], self._etags[req.target]
                stored = None
        known = _checksums(reply.headers)
        if stored is None or (known and stored[0] not in known):
            return  # the upstream's own checksum of another algorithm stands
        algorithm, value, kind = stored  # moto's multipart value lacks "-<parts>" and type
        reply.headers.set(_PREFIX + algorithm, value)
        reply.headers.set("x-amz-checksum-type", kind)

    _get_done = _head_done


def _mismatch(req: Request, algorithm: str) -> Reply:
    message = f"The {label(algorithm)} you specified did not match the calculated checksum."
    return s3_error(req, 400, "BadDigest", message)


def _md5(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 16 else None


def _checksums(headers: Headers) -> set[str]:
    """Algorithms of the ``x-amz-checksum-<algorithm>`` headers present."""
    names = {name.lower() for name, _value in headers}
    return {a for a in ALGORITHMS if _PREFIX + a in names}
