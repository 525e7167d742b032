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

import random
import socket
import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from urllib.parse import urlsplit

from faultproxy_http import ALL_KINDS, FAULT_KINDS, FaultHandler, FaultServer

__all__ = ["ALL_KINDS", "FAULT_KINDS", "FaultProxy"]


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
        self.upstream_timeout = 300.0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self.reset_stats()
        self._server: FaultServer | None = None
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
        self._server = FaultServer(("127.0.0.1", 0), FaultHandler)
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

    def _decide(self, target: str, ranged: bool = False) -> str | None:
        """Count a request and pick its fault kind (None: forward normally)."""
        with self._lock:
            self._stats["requests"] += 1
            self._stats["ranged"] += ranged
            if target in self.always_fail_keys:
                kind = self.always_fail_kind
            elif (
                self.fault_rate > 0
                and (self.key_filter is None or self.key_filter(target))
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


