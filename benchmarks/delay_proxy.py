"""A delay-line TCP proxy on 127.0.0.1: every byte arrives a fixed time after it was sent.

``python -m benchmarks.delay_proxy --upstream 127.0.0.1:PORT --rtt-ms 20`` listens on a free
loopback port, prints ``listening http://127.0.0.1:<port>`` and forwards each connection to
the upstream, holding every chunk for half the round trip in each direction. It is a delay
line, not a rate limit: throughput is not capped, only latency added (like a fast WAN link).
Both ends are 127.0.0.1 only. It runs as its own process so that the benchmark can account
for its CPU apart from the contenders' (a saturated proxy must not pass for a slow tool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

CHUNK = 256 * 1024
QUEUE = 256  # chunks held per direction at most (backpressure beyond)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk delivered ``delay`` seconds after it came."""
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE)

    async def feed() -> None:
        try:
            while data := await reader.read(CHUNK):
                await line.put((loop.time() + delay, data))
        finally:
            await line.put((loop.time() + delay, b""))

    feeder = asyncio.create_task(feed())
    try:
        while True:
            due, data = await line.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await feeder


async def _handle(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    upstream: tuple[str, int],
    delay: float,
) -> None:
    try:
        up_r, up_w = await asyncio.open_connection(*upstream)
    except OSError:
        client_w.close()
        return
    try:
        await asyncio.gather(_pipe(client_r, up_w, delay), _pipe(up_r, client_w, delay))
    finally:
        for w in (client_w, up_w):
            w.close()


async def serve(upstream: tuple[str, int], rtt_ms: float, port: int = 0) -> None:
    """Listen on 127.0.0.1:``port`` (0: free) and forward to ``upstream`` with the delay."""
    if upstream[0] not in ("127.0.0.1", "localhost"):
        raise SystemExit("the delay proxy only forwards to 127.0.0.1")
    delay = rtt_ms / 2000.0

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _handle(r, w, upstream, delay)

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening http://127.0.0.1:{bound}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delay_proxy")
    parser.add_argument("--upstream", required=True, help="host:port (127.0.0.1 only)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (20)")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: free)")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((host, int(port)), args.rtt_ms, args.port))


if __name__ == "__main__":
    main()
