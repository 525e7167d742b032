"""What rules see and return: headers, the request, the reply, the rule base class.

A request is parsed once (path-style addressing: ``/bucket/key?query``) into its bucket,
key, query and S3 operation, so each rule does not parse it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["Headers", "Reply", "Request", "Rule", "s3_error"]


class Headers:
    """Ordered HTTP header list with case-insensitive look-up; duplicates are kept."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        """Copy ``items`` (name, value) pairs."""
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (any case), else ``default``."""
        low = name.lower()
        return next((v for k, v in self._items if k.lower() == low), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header by one with ``value`` (appended if absent)."""
        low = name.lower()
        for i, (k, _v) in enumerate(self._items):
            if k.lower() == low:
                self._items[i] = (k, value)
                self._items = [
                    kv for j, kv in enumerate(self._items) if j <= i or kv[0].lower() != low
                ]
                return
        self._items.append((name, value))

    def setdefault(self, name: str, value: str) -> None:
        """Add ``name: value`` unless a ``name`` header is there already."""
        if name not in self:
            self._items.append((name, value))

    def pop(self, name: str) -> str | None:
        """Remove every ``name`` header; return the first value (None if absent)."""
        value = self.get(name)
        low = name.lower()
        self._items = [kv for kv in self._items if kv[0].lower() != low]
        return value

    def items(self) -> list[tuple[str, str]]:
        """A copy of the (name, value) pairs in order."""
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def _operation(method: str, key: str, query: dict[str, str], headers: Headers) -> str:
    """Name the S3 operation of a path-style request (``other`` if unknown)."""
    if not key:
        bucket_ops = {
            "GET": "list_uploads" if "uploads" in query else
            "location" if "location" in query else "list",
            "HEAD": "head_bucket", "PUT": "create_bucket", "DELETE": "delete_bucket",
            "POST": "delete_objects" if "delete" in query else "other",
        }  # fmt: skip
        return bucket_ops.get(method, "other")
    upload = "uploadId" in query
    if method == "PUT":
        if "partNumber" in query and upload:
            return "part_copy" if "x-amz-copy-source" in headers else "part"
        if query.keys() & {"tagging", "acl", "retention", "legal-hold"}:
            return "other"
        return "copy" if "x-amz-copy-source" in headers else "put"
    if method == "POST":
        return "create_mpu" if "uploads" in query else "complete" if upload else "other"
    named = {"GET": "list_parts" if upload else "get", "HEAD": "head",
             "DELETE": "abort" if upload else "delete"}  # fmt: skip
    if method == "GET" and query.keys() & {"tagging", "acl", "attributes"}:
        return "other"
    return named.get(method, "other")


@dataclass
class Request:
    """One client request as the rules see it.

    ``headers`` may be edited by rules before forwarding (the edited list is sent
    upstream; keep signed headers intact unless the upstream does not check them).
    ``state`` is scratch space shared by the rules for this request.
    """

    method: str
    path: str  # path and query exactly as the client sent them
    headers: Headers
    bucket: str = ""
    key: str = ""
    query: dict[str, str] = field(default_factory=dict)
    op: str = "other"
    body_length: int | None = None  # payload bytes (decoded length for aws-chunked)
    body: bytes | None = None  # the payload, when a rule asked for it (buffer_body)
    trailers: dict[str, str] = field(default_factory=dict)  # aws-chunked trailers
    received: int = 0  # payload bytes seen so far
    buffer_body: bool = False
    edit_body: Callable[[bytes], bytes] | None = None  # read whole, edit, then forward
    observers: list[Callable[[bytes], None]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    original: list[tuple[str, str]] = field(default_factory=list)  # headers as received

    @classmethod
    def parse(cls, method: str, path: str, headers: Headers) -> Request:
        """Build a request from the request line and headers."""
        parts = urlsplit(path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = headers.get("x-amz-decoded-content-length") or headers.get("Content-Length")
        return cls(
            method=method, path=path, headers=headers, bucket=bucket, key=key, query=query,
            op=_operation(method, key, query, headers),
            body_length=int(length) if length and length.isdigit() else None,
            original=headers.items(),
        )  # fmt: skip

    @property
    def target(self) -> str:
        """``bucket/key`` (``bucket`` for bucket requests, ``""`` for the service)."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    @property
    def ranged(self) -> bool:
        """Whether the request carries a Range header."""
        return "Range" in self.headers

    def replace_body(self, edit: Callable[[bytes], bytes]) -> None:
        """Forward ``edit(payload)`` instead of the payload (read whole first; small bodies)."""
        self.buffer_body = True
        self.edit_body = edit

    def observe(self, callback: Callable[[bytes], None]) -> None:
        """Have ``callback`` called with each piece of the payload as it streams by."""
        self.observers.append(callback)


@dataclass
class Reply:
    """A reply on its way to the client: from upstream, or made by a rule.

    ``body`` is None while an upstream body streams through unread; it holds the bytes
    when a rule made the reply or asked for the body (``Rule.needs_body``). ``abort`` set
    by a rule ends the exchange early: ``("reset"|"truncate", n)`` sends headers and the
    first ``n`` body bytes, then closes with an RST or a FIN.
    """

    status: int
    headers: Headers
    body: bytes | None = None
    reason: str = ""
    upstream: Any = None  # http.client.HTTPResponse still to be read, if any
    abort: tuple[str, int] | None = None
    made_by: str = ""  # name of the rule that made it ("" for upstream)
    dropped: Any = None  # an upstream reply replaced before its body was read

    def become(self, other: Reply) -> None:
        """Turn into ``other``; an upstream body not read yet is dropped (with its connection)."""
        if self.upstream is not None:
            self.dropped = self.upstream
        self.status, self.headers, self.body = other.status, other.headers, other.body
        self.reason, self.upstream, self.abort = other.reason, other.upstream, other.abort
        self.made_by = other.made_by or "rule"

    @property
    def ok(self) -> bool:
        """2xx status."""
        return 200 <= self.status < 300


class Rule:
    """Base class of proxy rules; every hook is optional.

    Order of calls for one request, over the proxy's rules in list order: ``on_request``
    (a returned Reply answers the request; later rules do not see it), the payload
    streams upstream (``Request.observe`` callbacks), ``on_request_end`` (a Reply answers
    instead and the upstream never gets the last bytes), then ``needs_body`` and
    ``on_response`` in reverse order over the rules that saw the request, and finally
    ``on_done`` for each of them, even on errors.
    """

    def on_request(self, req: Request) -> Reply | None:
        """See the request before it is forwarded; may edit headers or answer."""
        return None

    def on_request_end(self, req: Request) -> Reply | None:
        """The payload was read (but its last bytes not yet sent): may answer instead."""
        return None

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Whether ``on_response`` needs ``reply.body`` read into memory."""
        return False

    def on_response(self, req: Request, reply: Reply) -> None:
        """Edit the reply (status, headers, and body if read)."""

    def on_done(self, req: Request) -> None:
        """The exchange is over (answered, failed or dropped)."""


def s3_error(
    req: Request,
    status: int,
    code: str,
    message: str,
    extra: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An S3-style XML error reply (no body for HEAD, as S3 sends it)."""
    request_id = uuid.uuid4().hex[:16].upper()
    elements = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in (extra or {}).items())
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{elements}"
        f"<Resource>{escape(urlsplit(req.path).path)}</Resource>"
        f"<RequestId>{request_id}</RequestId></Error>"
    ).encode()
    hdrs = Headers([("Content-Type", "application/xml"), ("x-amz-request-id", request_id)])
    for name, value in (headers or {}).items():
        hdrs.set(name, value)
    return Reply(status, hdrs, b"" if req.method == "HEAD" else body)
