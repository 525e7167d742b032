"""The proxy core: forwards each request upstream and lets a list of rules steer it.

``S3Proxy`` listens on ``127.0.0.1:<free port>`` and forwards every request to an
upstream S3 endpoint with its method, path, headers (including the client's ``Host``,
which SigV4 signs) and body bytes unchanged, so signatures still validate upstream.
Only the hop-by-hop ``Connection``/``Keep-Alive``/``Expect`` headers are dropped; the
proxy answers ``100-continue`` itself once it decided to forward (a request a rule
answers first gets its reply instead of ``100 Continue``, as S3 does). Chunked request
bodies are relayed verbatim, in 64 KiB blocks; the last block is held back until every
rule has accepted the whole payload (see ``Rule.on_request_end``).
"""

from __future__ import annotations

import http.client
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar
from urllib.parse import urlsplit

from .bodies import HoldBack, payload_sink, relay_body
from .exchange import Headers, Reply, Request, Rule, s3_error
from .resign import refresh_body_digests, resign

__all__ = ["S3Proxy"]

_REQUEST_SKIP = {"connection", "keep-alive", "proxy-connection", "expect"}
_RESPONSE_SKIP = {"connection", "keep-alive", "transfer-encoding"}
_BLOCK = 64 * 1024
R = TypeVar("R", bound=Rule)


class S3Proxy:
    """Reverse proxy in front of an S3 endpoint, steered by ``rules`` (settable any time)."""

    def __init__(
        self,
        upstream_url: str,
        rules: Iterable[Rule] = (),
        upstream_timeout: float = 300.0,
        credentials: dict[str, str] | None = None,
    ) -> None:
        """Configure (but do not start) the proxy.

        Args:
            upstream_url: ``http://host:port`` of the real S3 server.
            rules: Rules in order: the first sees requests first and replies last.
            upstream_timeout: Socket timeout towards the upstream, in seconds.
            credentials: Access key -> secret key, to sign again the requests whose
                headers or body a rule edited (for an upstream that checks signatures).
        """
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream_url must be http://host:port, got {upstream_url!r}")
        self.upstream_url = upstream_url
        self.upstream = (parts.hostname, parts.port or 80)
        self.rules: list[Rule] = list(rules)
        self.upstream_timeout = upstream_timeout
        self.credentials = dict(credentials or {})
        self.connections = 0  # client connections accepted
        self.lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def rule(self, kind: type[R]) -> R:
        """The first rule of type ``kind`` (KeyError if there is none)."""
        for rule in self.rules:
            if isinstance(rule, kind):
                return rule
        raise KeyError(kind.__name__)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` clients should use instead of the upstream."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> S3Proxy:
        """Listen on a free 127.0.0.1 port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
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

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    proxy: S3Proxy

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "S3Proxy"
    timeout = 300  # idle keep-alive connections are dropped after this
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None
        self._expecting = False  # the client waits for 100 Continue
        with self.server.conns_lock:
            self.server.conns.add(self.connection)
        with self.server.proxy.lock:
            self.server.proxy.connections += 1

    def finish(self) -> None:
        with self.server.conns_lock:
            self.server.conns.discard(self.connection)
        self._drop_upstream()
        with suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests and benchmarks read counters, not access logs."""

    def handle_expect_100(self) -> bool:
        """Defer ``100 Continue`` until the request is forwarded (see ``_forward``)."""
        self._expecting = True
        return True

    def _handle(self) -> None:
        req = Request.parse(self.command, self.path, Headers(self.headers.items()))
        seen: list[Rule] = []
        try:
            reply = self._request_phase(req, list(self.server.proxy.rules), seen)
            for rule in reversed(seen):
                if reply.body is None and rule.needs_body(req, reply):
                    self._read_body(req, reply)
            for rule in reversed(seen):
                rule.on_response(req, reply)
            if reply.dropped is not None:
                self._drop_upstream()
            self._send(req, reply)
        except OSError:  # the client went away
            self._drop_upstream()
            self.close_connection = True
        finally:
            self._expecting = False
            for rule in seen:
                rule.on_done(req)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_OPTIONS = _handle

    def _request_phase(self, req: Request, rules: list[Rule], seen: list[Rule]) -> Reply:
        for rule in rules:
            seen.append(rule)
            reply = rule.on_request(req)
            if reply is not None:
                reply.made_by = reply.made_by or type(rule).__name__
                self._skip_body(req)
                return reply
        try:
            return self._forward(req, seen)
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self.close_connection = True  # the request body may be half read
            reply = s3_error(req, 502, "BadGateway", "Upstream failed.")
            reply.headers.set("x-fault-proxy", "502")
            reply.made_by = "S3Proxy"
            return reply

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._upstream
        if conn is not None and conn.sock is not None:
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:  # idle upstream connection was closed (or has junk): reopen
                conn.close()
        if conn is None:
            proxy = self.server.proxy
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=proxy.upstream_timeout)
            self._upstream = conn
        return conn

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _forward(self, req: Request, seen: list[Rule]) -> Reply:
        if self._expecting:
            self._expecting = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        edited = None
        if req.edit_body is not None:  # read it whole, let the rules refuse it, then edit
            self._relay_body(req, lambda data: None, decode=True)
            if (refused := self._request_end(req, seen)) is not None:
                return refused
            edited = req.edit_body(req.body or b"")
            req.headers.pop("Transfer-Encoding")
            req.headers.set("Content-Length", str(len(edited)))
            if edited != req.body:
                refresh_body_digests(req.headers, edited)
        if req.headers.items() != req.original and self.server.proxy.credentials:
            resign(req.method, req.path, req.headers, self.server.proxy.credentials)
        has_body = edited is None and (
            "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
        )
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.putrequest(req.method, req.path, skip_host=True, skip_accept_encoding=True)
                for name, value in req.headers:
                    if name.lower() not in _REQUEST_SKIP:
                        conn.putheader(name, value)
                conn.endheaders()
                if edited is not None:
                    conn.send(edited)
                else:
                    hold = HoldBack(conn.send)
                    self._relay_body(req, hold, decode=True)
                    if (refused := self._request_end(req, seen)) is not None:
                        self._drop_upstream()  # the upstream never gets a whole request
                        return refused
                    hold.release()
                resp = conn.getresponse()
                return Reply(resp.status, Headers(resp.getheaders()), None, resp.reason, resp)
            except (ConnectionError, http.client.RemoteDisconnected):
                self._drop_upstream()
                if has_body or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _request_end(req: Request, seen: list[Rule]) -> Reply | None:
        if "_ended" in req.state:
            return None
        req.state["_ended"] = True
        for rule in seen:
            reply = rule.on_request_end(req)
            if reply is not None:
                reply.made_by = reply.made_by or type(rule).__name__
                return reply
        return None

    def _relay_body(self, req: Request, send: Callable[[bytes], object], decode: bool) -> None:
        """Copy the request body verbatim to ``send``, and the payload to the rules."""
        sink = payload_sink(req) if decode else None
        relay_body(self.rfile, self.headers, send, sink)  # type: ignore[arg-type]

    def _skip_body(self, req: Request) -> None:
        """Drop the body of a request a rule answered (unsent if the client still waits)."""
        if self._expecting:
            self.close_connection = True  # the client may send it anyway: do not reuse
        else:
            self._relay_body(req, lambda data: None, decode=False)

    def _read_body(self, req: Request, reply: Reply) -> None:
        resp = reply.upstream
        if resp is None or not _has_body(req.method, reply.status):
            return
        reply.body = resp.read()
        reply.upstream = None
        if resp.will_close:
            self._drop_upstream()

    def _send_headers(self, reply: Reply, length: int | None) -> None:
        self.send_response_only(reply.status, reply.reason or None)
        if reply.made_by:
            self.send_header("Server", self.version_string())
            self.send_header("Date", formatdate(usegmt=True))
        for name, value in reply.headers:
            if name.lower() not in _RESPONSE_SKIP and not (
                length is not None and name.lower() == "content-length"
            ):
                self.send_header(name, value)
        resp = reply.upstream
        if length is not None:
            self.send_header("Content-Length", str(length))
        elif resp is not None and resp.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif reply.headers.get("Content-Length") is None and _has_body(self.command, reply.status):
            self.send_header("Connection", "close")  # body delimited by EOF
        if self.close_connection and reply.made_by:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, req: Request, reply: Reply) -> None:
        if reply.abort is not None:
            self._send_partial(req, reply)
        elif reply.upstream is None:
            body = reply.body or b""
            with_body = _has_body(req.method, reply.status)
            self._send_headers(reply, len(body) if with_body or reply.made_by else None)
            if with_body:
                self.wfile.write(body)
            if self.close_connection:
                self._linger()
        else:
            self._relay_response(req, reply)

    def _relay_response(self, req: Request, reply: Reply) -> None:
        resp = reply.upstream
        chunked = bool(resp.chunked) and _has_body(req.method, reply.status)
        self._send_headers(reply, None)
        while block := resp.read(_BLOCK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        if resp.will_close:
            self._drop_upstream()

    def _send_partial(self, req: Request, reply: Reply) -> None:
        kind, cut = reply.abort or ("truncate", 0)
        if reply.upstream is not None:
            self._read_body(req, reply)
        self._drop_upstream()
        if reply.body and _has_body(req.method, reply.status):
            self._send_headers(reply, len(reply.body))
            self.wfile.write(reply.body[:cut])
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

    def _linger(self) -> None:
        """Close after a reply the client may not have waited for: read what it still sends."""
        with suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(2.0)
            while self.connection.recv(_BLOCK):
                pass


def _has_body(method: str, status: int) -> bool:
    return method != "HEAD" and status not in (204, 304) and status >= 200
