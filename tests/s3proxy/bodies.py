"""Request payloads as they stream: the aws-chunked decoder and the held-back sender."""

from __future__ import annotations

from collections.abc import Callable
from email.message import Message
from typing import BinaryIO

from .exchange import Request

__all__ = ["AwsChunkedDecoder", "HoldBack", "payload_sink", "relay_body"]

_MAX_LINE = 64 * 1024
_BLOCK = 64 * 1024


class AwsChunkedDecoder:
    """Incremental decoder of an ``aws-chunked`` content encoding.

    The encoded stream is ``<hex size>[;chunk-signature=...]\\r\\n<data>\\r\\n`` chunks,
    a zero-size chunk, then optional trailer lines ``name:value\\r\\n`` and an empty line.
    Data goes to ``sink`` as it arrives (never buffered whole); trailers are collected.
    """

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        """Send decoded payload pieces to ``sink``."""
        self.sink = sink
        self.trailers: dict[str, str] = {}
        self.done = False
        self._buf = bytearray()
        self._left = 0  # data bytes left in the current chunk
        self._state = "size"  # size | data | crlf | trailer

    def feed(self, data: bytes) -> None:
        """Decode the next encoded bytes."""
        self._buf += data
        while self._buf and not self.done:
            if self._state == "data":
                take = min(self._left, len(self._buf))
                self.sink(bytes(self._buf[:take]))
                del self._buf[:take]
                self._left -= take
                if self._left == 0:
                    self._state = "crlf"
                continue
            line = self._line()
            if line is None:
                return
            self._step(line)

    def _line(self) -> bytes | None:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > _MAX_LINE:
                raise ValueError("aws-chunked framing line too long")
            return None
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        return line

    def _step(self, line: bytes) -> None:
        if self._state == "crlf":
            self._state = "size"
        elif self._state == "size":
            self._left = int(line.split(b";", 1)[0].strip() or b"0", 16)
            self._state = "data" if self._left else "trailer"
        elif not line:  # the empty line after the trailers
            self.done = True
        else:
            name, _, value = line.decode("latin-1").partition(":")
            self.trailers[name.strip().lower()] = value.strip()


class HoldBack:
    """Sends everything but the last block given, until ``release()``.

    A rule that finds fault with a body once it was read whole (a bad checksum, too many
    bytes) can then stop it: the upstream never receives a complete request.
    """

    def __init__(self, send: Callable[[bytes], object] | None) -> None:
        """Pass blocks on to ``send`` (None: discard them)."""
        self._send = send
        self._pending = b""

    def __call__(self, block: bytes) -> None:
        """Queue ``block``, sending the one queued before it."""
        if self._pending and self._send is not None:
            self._send(self._pending)
        self._pending = block

    def release(self) -> None:
        """Send the held-back block."""
        if self._pending and self._send is not None:
            self._send(self._pending)
        self._pending = b""


def payload_sink(req: Request) -> Callable[[bytes], None] | None:
    """Where a request's body bytes go for the rules (None: nobody looks at them).

    The payload (aws-chunked bodies decoded) goes to ``req.observers``, to ``req.body``
    when a rule asked for it, and is counted in ``req.received``; trailers end up in
    ``req.trailers``.
    """
    if not req.observers and not req.buffer_body:
        return None
    buffered: list[bytes] = []
    if req.buffer_body:
        req.body = b""

    def deliver(piece: bytes) -> None:
        req.received += len(piece)
        if req.buffer_body:
            buffered.append(piece)
            req.body = b"".join(buffered) if len(buffered) > 1 else piece
        for observe in req.observers:
            observe(piece)

    encoding = req.headers.get("Content-Encoding", "") or ""
    sha = req.headers.get("x-amz-content-sha256", "") or ""
    if "aws-chunked" in encoding.lower() or sha.startswith("STREAMING-"):
        decoder = AwsChunkedDecoder(deliver)
        req.trailers = decoder.trailers
        return decoder.feed
    return deliver


def relay_body(
    rfile: BinaryIO,
    headers: Message,
    send: Callable[[bytes], object],
    sink: Callable[[bytes], None] | None,
) -> None:
    """Copy a request body verbatim from ``rfile`` to ``send``; its data to ``sink`` too.

    ``Transfer-Encoding: chunked`` framing goes to ``send`` only; without it, the body is
    ``Content-Length`` bytes (none if absent).
    """

    def both(data: bytes) -> None:
        send(data)
        if sink is not None:
            sink(data)

    if headers.get("Transfer-Encoding", "").lower() != "chunked":
        _copy(rfile, both, int(headers.get("Content-Length") or 0))
        return
    while True:
        line = rfile.readline(65537)
        send(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (trailer := rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                send(trailer)
            send(b"\r\n")
            return
        _copy(rfile, both, size)
        _copy(rfile, send, 2)


def _copy(src: BinaryIO, send: Callable[[bytes], object], size: int) -> None:
    """Copy exactly ``size`` bytes from ``src`` to ``send``."""
    while size > 0:
        block = src.read(min(size, _BLOCK))
        if not block:
            raise ConnectionError("client closed the connection mid-body")
        send(block)
        size -= len(block)
