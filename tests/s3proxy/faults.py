"""Seeded fault injection (``Faults``) and ``FaultProxy``, the proxy with just that rule.

With probability ``fault_rate`` (seeded RNG, reproducible for a given request order)
a request gets one of these faults instead of a plain forward:

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
reading ``get_object()["Body"]`` (see tests/integration/test_faultproxy.py) and only s3transfer's
download methods retry that.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlsplit

from .core import S3Proxy
from .exchange import Reply, Request, Rule, s3_error
from .rules import Rewrite

__all__ = ["ALL_KINDS", "FAULT_KINDS", "FaultProxy", "Faults"]

FAULT_KINDS = ("500", "503", "slowdown", "reset", "truncate")
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "ServiceUnavailable", "Service is unable to handle request."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
}
ALL_KINDS = (*FAULT_KINDS, "403", "corrupt")
_PARTIAL = ("reset", "truncate", "corrupt")


class Faults(Rule):
    """Injects seeded faults; its settings (attributes) may be changed while it runs."""

    def __init__(
        self,
        fault_rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[str] = FAULT_KINDS,
        latency_s: float = 0.0,
        key_filter: Callable[[str], bool] | None = None,
    ) -> None:
        """Configure the faults.

        Args:
            fault_rate: Probability in [0, 1] that a request gets a fault.
            seed: Seed of the RNG choosing faults and truncation points.
            kinds: Fault kinds to choose from (see module docstring).
            latency_s: Delay added before handling each request.
            key_filter: Called with ``"bucket/key"`` (``"bucket"`` for bucket requests);
                random faults only hit requests for which it returns True.
        """
        self.fault_rate = fault_rate
        self.kinds = tuple(kinds)
        self.latency_s = latency_s
        self.key_filter = key_filter
        self.always_fail_keys: set[str] = set()
        self.always_fail_kind = "500"
        self.drop_request_headers: set[str] = set()  # lower case; {"range"}: moto ignores Range
        self.fault_methods: set[str] | None = None  # only these methods get faults (None: all)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {}
        self.reset_stats()

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
    def stats(self) -> dict[str, int]:
        """Counters: requests, ranged (with Range), forwarded, injected, one per kind."""
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        """Zero all counters."""
        with self._lock:
            self._stats = dict.fromkeys(
                ("requests", "ranged", "forwarded", "injected", *ALL_KINDS), 0
            )

    def on_request(self, req: Request) -> Reply | None:
        """Pick the request's fate; answer the HTTP error kinds at once."""
        target = unquote(urlsplit(req.path).path).lstrip("/")
        kind = self._decide(target, req.ranged, req.method)
        req.state[self._key] = kind
        for name in self.drop_request_headers:
            req.headers.pop(name)
        if self.latency_s > 0:
            time.sleep(self.latency_s)  # simulated network latency
        if kind not in _ERRORS:
            return None
        status, code, message = _ERRORS[kind]
        reply = s3_error(req, status, code, message)
        reply.headers.set("x-fault-proxy", kind)
        return reply

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Partial-reply kinds need the whole body to cut or flip it."""
        return req.state.get(self._key) in _PARTIAL

    def on_response(self, req: Request, reply: Reply) -> None:
        """Mark the reply to be cut short (reset, truncate) or corrupted."""
        kind = req.state.get(self._key)
        if kind not in _PARTIAL:
            return
        cut = 0
        if reply.body and req.method != "HEAD":
            cut = self._cut(len(reply.body))
            if kind == "corrupt":
                body = bytearray(reply.body)
                body[cut] ^= 0xFF
                reply.body, cut = bytes(body), len(body)
        reply.abort = ("reset" if kind == "reset" else "truncate", cut)

    @property
    def _key(self) -> str:
        return f"fault:{id(self)}"

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
            if kind in _PARTIAL:
                self._stats["forwarded"] += 1
            return kind

    def _cut(self, length: int) -> int:
        """Seeded number of body bytes to send before a reset/truncate."""
        with self._lock:
            return self._rng.randrange(length)


def _delegate(rule: str, name: str) -> property:
    """A property reading and writing attribute ``name`` of the proxy's ``rule``."""

    def get(self: FaultProxy) -> object:
        return getattr(getattr(self, rule), name)

    def put(self: FaultProxy, value: object) -> None:
        setattr(getattr(self, rule), name, value)

    return property(get, put, doc=f"``{rule}.{name}``")


class FaultProxy(S3Proxy):
    """Reverse proxy in front of an S3 endpoint that injects seeded faults.

    An ``S3Proxy`` with the rules ``[Faults(...), Rewrite(None)]``; the settings of both
    are attributes of the proxy too, and may be changed while it runs.
    """

    fault_rate = _delegate("faults", "fault_rate")
    kinds = _delegate("faults", "kinds")
    latency_s = _delegate("faults", "latency_s")
    key_filter = _delegate("faults", "key_filter")
    always_fail_keys = _delegate("faults", "always_fail_keys")
    always_fail_kind = _delegate("faults", "always_fail_kind")
    drop_request_headers = _delegate("faults", "drop_request_headers")
    fault_methods = _delegate("faults", "fault_methods")
    # rewrite(method, path_and_query, body) -> new body: edits forwarded replies (listings)
    rewrite = _delegate("rewriter", "rewrite")

    def __init__(
        self,
        upstream_url: str,
        fault_rate: float = 0.0,
        seed: int = 0,
        kinds: Iterable[str] = FAULT_KINDS,
        latency_s: float = 0.0,
        key_filter: Callable[[str], bool] | None = None,
    ) -> None:
        """Configure (but do not start) the proxy; arguments as for ``Faults``."""
        self.faults = Faults(fault_rate, seed, kinds, latency_s, key_filter)
        self.rewriter = Rewrite(None)
        super().__init__(upstream_url, [self.faults, self.rewriter])

    @property
    def stats(self) -> dict[str, int]:
        """Counters: connections, requests, ranged, forwarded, injected, one per kind."""
        with self.lock:
            connections = self.connections
        return {"connections": connections, **self.faults.stats}

    def reset_stats(self) -> None:
        """Zero all counters."""
        with self.lock:
            self.connections = 0
        self.faults.reset_stats()

    def start(self) -> FaultProxy:
        """Listen on a free 127.0.0.1 port and serve in a background thread."""
        super().start()
        return self

    def __enter__(self) -> FaultProxy:
        return self.start()
