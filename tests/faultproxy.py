"""Fault-injecting HTTP reverse proxy for S3 tests and benchmarks (stdlib only).

``FaultProxy`` listens on ``127.0.0.1:<free port>`` and forwards every request to an
upstream S3 endpoint with its method, path, headers (including the client's ``Host``,
which SigV4 signs) and body bytes unchanged, so signatures still validate upstream.
Only the hop-by-hop ``Connection``/``Keep-Alive``/``Expect`` headers are dropped (the
proxy answers ``100-continue`` itself); chunked request bodies are relayed verbatim.

With probability ``fault_rate`` (seeded RNG, reproducible for a given request order)
a request gets one of these faults instead:

* ``"500"``: ``500 InternalError``; ``"503"``: ``503 ServiceUnavailable``;
  ``"slowdown"``: ``503 SlowDown``; ``"403"``: ``403 AccessDenied`` (not retryable,
  not in the defaults). S3 XML error bodies; the upstream never sees the request.
* ``"reset"``: the request is forwarded, then the client gets the response headers and
  part of the body, and the socket is closed with an RST.
* ``"truncate"``: as ``reset`` but closed cleanly (FIN) after sending fewer body bytes
  than the (correct) ``Content-Length`` announces.
* ``"corrupt"`` (not a default): the whole body with one seeded byte flipped, so only a
  checksum can tell; bodiless responses are cut as by ``truncate``. Keep it off listings
  with ``key_filter``.

For responses without a body (HEAD, empty PUT/DELETE answers) ``reset``/``truncate``
close the connection before sending anything. botocore retries the HTTP errors and
the closed connections (``ConnectionClosedError``) itself; a short body surfaces while
reading ``get_object()["Body"]`` (see tests/test_faultproxy.py) and only s3transfer's
download methods retry that.
"""

from __future__ import annotations

import http.client
import random
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

__all__ = ["ALL_KINDS", "FAULT_KINDS", "FaultProxy"]

FAULT_KINDS = ("500", "503", "slowdown", "reset", "truncate")
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
}
ALL_KINDS = (*FAULT_KINDS, "403", "corrupt")
_REQUEST_SKIP = {"connection", "keep-alive", "proxy-connection", "expect"}
_RESPONSE_SKIP = {"connection", "keep-alive", "transfer-encoding"}
_BLOCK = 64 * 1024
Headers = Callable[[str, str, list[tuple[str, str]]], list[tuple[str, str]]]


class FaultProxy:
    """Reverse proxy in front of an S3 endpoint that injects seeded faults.

    Its settings (the attributes set in ``__init__``) may be changed while it runs.
    """

    def __init__(
        self,
        upstream_url: str,
        fault_rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[str] = FAULT_KINDS,
        latency_s: float = 0.0,
        key_filter: Callable[[str], bool] | None = None,
    ) -> None:
        """Configure (but do not start) the proxy.

        Args:
            upstream_url: ``http://host:port`` of the real S3 server.
            fault_rate: Probability in [0, 1] that a request gets a fault.
            seed: Seed of the RNG choosing faults and truncation points.
            kinds: Fault kinds to choose from (see module docstring).
            latency_s: Delay added before handling each request.
            key_filter: Called with ``"bucket/key"`` (``"bucket"`` for bucket requests);
                random faults only hit requests for which it returns True.
        """
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream_url must be http://host:port, got {upstream_url!r}")
        self.upstream_url = upstream_url
        self._upstream = (parts.hostname, parts.port or 80)
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.latency_s = latency_s
        self.key_filter = key_filter
        self.always_fail_keys: set[str] = set()
        self.always_fail_kind = "500"
        self.drop_request_headers: set[str] = set()  # lower case; {"range"}: moto ignores Range
        # rewrite(method, path_and_query, body) -> new body: edits forwarded replies (listings)
        self.rewrite: Callable[[str, str, bytes], bytes] | None = None
        # rewrite_headers(method, path_and_query, headers) -> headers: edits reply headers
        self.rewrite_headers: Headers | None = None
        # on_request(method, path_and_query, headers): sees each request as the client sent it
        self.on_request: Callable[[str, str, list[tuple[str, str]]], None] | None = None
        self.fault_methods: set[str] | None = None  # only these methods get faults (None: all)
        self.upstream_timeout = 300.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self.reset_stats()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """Fault kinds random faults are drawn from."""
        return self._kinds

    @kinds.setter
    def kinds(self, value: Iterable[str]) -> None:
        kinds = tuple(value)
        unknown = set(kinds) - set(ALL_KINDS)
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {ALL_KINDS}, got {kinds}")
        self._kinds = kinds

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` clients should use instead of the upstream."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections, requests, ranged (with Range), forwarded, injected, kinds."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Zero all counters."""
        with self._lock:
            self._stats = dict.fromkeys(
                ("connections", "requests", "ranged", "forwarded", "injected", *ALL_KINDS), 0
            )

    def start(self) -> FaultProxy:
        """Listen on a free 127.0.0.1 port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("FaultProxy already started")
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open client connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.conns_lock:
            conns = list(server.conns)
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _decide(self, target: str, ranged: bool = False, method: str = "GET") -> str | None:
        """Count a request and pick its fault kind (None: forward normally)."""
        with self._lock:
            self._stats["requests"] += 1
            self._stats["ranged"] += ranged
            if target in self.always_fail_keys:
                kind = self.always_fail_kind
            elif (
                self.fault_rate > 0
                and (self.key_filter is None or self.key_filter(target))
                and (self.fault_methods is None or method in self.fault_methods)
                and self._rng.random() < self.fault_rate
            ):
                kind = self._rng.choice(self._kinds)
            else:
                self._stats["forwarded"] += 1
                return None
            self._stats["injected"] += 1
            self._stats[kind] += 1
            if kind in ("reset", "truncate", "corrupt"):
                self._stats["forwarded"] += 1
            return kind

    def _cut(self, length: int) -> int:
        """Seeded number of body bytes to send before a reset/truncate."""
        with self._lock:
            return self._rng.randrange(length)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    proxy: FaultProxy

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FaultProxy"
    timeout = 300  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None
        with self.server.conns_lock:
            self.server.conns.add(self.connection)
        with self.server.proxy._lock:
            self.server.proxy._stats["connections"] += 1

    def finish(self) -> None:
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        self._drop_upstream()
        with suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests and benchmarks read stats, not access logs."""

    def _handle(self) -> None:
        proxy = self.server.proxy
        target = unquote(urlsplit(self.path).path).lstrip("/")
        kind = proxy._decide(target, "Range" in self.headers, self.command)
        if proxy.on_request is not None:
            proxy.on_request(self.command, self.path, list(self.headers.items()))
        if proxy.latency_s > 0:
            time.sleep(proxy.latency_s)  # simulated network latency
        try:
            if kind in _ERRORS:
                self._relay_body(None)  # consume the body so the connection stays usable
                self._send_error(kind)
                return
            try:
                resp = self._forward()
            except (OSError, http.client.HTTPException):
                self._drop_upstream()
                self._send_error("502")
                self.close_connection = True  # the request body may be half read
                return
            if kind is None and proxy.rewrite is not None:
                self._send_rewritten(resp, proxy.rewrite)
            elif kind is None:
                self._relay_response(resp)
            else:
                self._send_partial(resp, kind)
        except OSError:  # the client went away
            self._drop_upstream()
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = _handle

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._upstream
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:  # idle upstream connection was closed (or has junk): reopen
                conn.close()
        if conn is None:
            host, port = self.server.proxy._upstream
            conn = http.client.HTTPConnection(
                host, port, timeout=self.server.proxy.upstream_timeout
            )
            self._upstream = conn
        return conn

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _forward(self) -> http.client.HTTPResponse:
        has_body = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                skip = _REQUEST_SKIP | self.server.proxy.drop_request_headers
                for name, value in self.headers.items():
                    if name.lower() not in skip:
                        conn.putheader(name, value)
                conn.endheaders()
                self._relay_body(conn)
                return conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                self._drop_upstream()
                if has_body or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _relay_body(self, conn: http.client.HTTPConnection | None) -> None:
        """Copy the request body verbatim to ``conn`` (or discard it if None)."""
        send = conn.send if conn is not None else (lambda data: None)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline(65537)
                send(line)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                        send(trailer)
                    send(b"\r\n")
                    return
                _copy(self.rfile, send, size + 2)
        else:
            _copy(self.rfile, send, int(self.headers.get("Content-Length") or 0))

    def _send_headers(self, resp: http.client.HTTPResponse, length: int | None) -> None:
        self.send_response_only(resp.status, resp.reason)
        headers = resp.getheaders()
        if self.server.proxy.rewrite_headers is not None:
            headers = self.server.proxy.rewrite_headers(self.command, self.path, headers)
        for name, value in headers:
            if name.lower() not in _RESPONSE_SKIP and not (
                length is not None and name.lower() == "content-length"
            ):
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        elif resp.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif resp.getheader("Content-Length") is None and _has_body(self.command, resp.status):
            self.send_header("Connection", "close")  # body delimited by EOF
        self.end_headers()

    def _relay_response(self, resp: http.client.HTTPResponse) -> None:
        chunked = bool(resp.chunked) and _has_body(self.command, resp.status)
        self._send_headers(resp, None)
        while block := resp.read(_BLOCK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        if resp.will_close:
            self._drop_upstream()

    def _send_rewritten(
        self, resp: http.client.HTTPResponse, rewrite: Callable[[str, str, bytes], bytes]
    ) -> None:
        body = rewrite(self.command, self.path, resp.read())
        if resp.will_close:
            self._drop_upstream()
        self._send_headers(resp, len(body) if _has_body(self.command, resp.status) else None)
        if _has_body(self.command, resp.status):
            self.wfile.write(body)

    def _send_partial(self, resp: http.client.HTTPResponse, kind: str) -> None:
        body = bytearray(resp.read())
        self._drop_upstream()
        if body and _has_body(self.command, resp.status):
            self._send_headers(resp, len(body))
            cut = self.server.proxy._cut(len(body))
            if kind == "corrupt":
                body[cut] ^= 0xFF
                cut = len(body)
            self.wfile.write(body[:cut])
        self._abort(rst=kind == "reset")

    def _abort(self, rst: bool) -> None:
        self.close_connection = True
        sock = self.connection
        with suppress(OSError):
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()  # drop the makefile() reference so close() is real
                sock.close()
            else:
                sock.shutdown(socket.SHUT_RDWR)

    def _send_error(self, kind: str) -> None:
        status, code, message = _ERRORS.get(kind, (502, "BadGateway", "Upstream failed."))
        request_id = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{escape(urlsplit(self.path).path)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        if self.command == "HEAD":
            body = b""
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", request_id)
        self.send_header("x-fault-proxy", kind)
        self.end_headers()
        self.wfile.write(body)


def _copy(src: object, send: Callable[[bytes], object], size: int) -> None:
    """Copy exactly ``size`` bytes from file-like ``src`` to ``send``."""
    while size > 0:
        block = src.read(min(size, _BLOCK))  # type: ignore[attr-defined]
        if not block:
            raise ConnectionError("client closed the connection mid-body")
        send(block)
        size -= len(block)


def _has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in (204, 304) and status >= 200
