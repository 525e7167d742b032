"""The HTTP side of :mod:`faultproxy`: the threading server and the request handler that
forwards to the upstream S3 server, relays or rewrites replies, and injects faults."""

from __future__ import annotations

import http.client
import select
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

if TYPE_CHECKING:
    from faultproxy import FaultProxy

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


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    proxy: FaultProxy

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FaultProxy"
    timeout = 300  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True
    server: FaultServer

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
        kind = proxy._decide(target, "Range" in self.headers)
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
        for name, value in resp.getheaders():
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
