"""Request payloads as they stream: the aws-chunked decoder and the held-back sender."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["AwsChunkedDecoder", "HoldBack"]

_MAX_LINE = 64 * 1024


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
