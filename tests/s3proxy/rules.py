"""Small rules: ``Counting`` requests, ``Rewrite`` of reply bodies, ``Throttle`` to a rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .exchange import Reply, Request, Rule, s3_error

__all__ = ["COUNTED_OPS", "Counting", "Rewrite", "Throttle"]

# The operations always present in Counting.stats (others are added as they are seen)
COUNTED_OPS = ("list", "head", "get", "put", "part", "complete", "abort", "delete")
_GROUPS = {"copy": "put", "part_copy": "part"}  # counted under both names


class Counting(Rule):
    """Counts requests per S3 operation, ranged GETs, error replies and requests in flight.

    A request is in flight from the moment this rule sees it until its reply was sent (or
    the exchange failed); ``max_in_flight`` is the most requests in flight at once. It
    counts what reaches it: put it first to count requests an earlier rule answers too.
    """

    def __init__(self) -> None:
        """Start with all counters at zero."""
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Zero all counters (requests now in flight still count as in flight)."""
        with self._lock:
            in_flight = self._counts.get("in_flight", 0)
            self._counts = dict.fromkeys(
                ("requests", "ranged", "errors", "max_in_flight", *COUNTED_OPS), 0
            )
            self._counts["in_flight"] = in_flight

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters: requests, one per operation, ranged, errors (>= 400),
        in_flight and max_in_flight."""
        with self._lock:
            return dict(self._counts)

    def __getitem__(self, name: str) -> int:
        """One counter (0 for an operation not seen yet)."""
        with self._lock:
            return self._counts.get(name, 0)

    def on_request(self, req: Request) -> None:
        """Count the request and one more in flight."""
        with self._lock:
            counts = self._counts
            counts["requests"] += 1
            counts[req.op] = counts.get(req.op, 0) + 1
            if req.op in _GROUPS:
                counts[_GROUPS[req.op]] += 1
            counts["ranged"] += req.op == "get" and req.ranged
            counts["in_flight"] += 1
            counts["max_in_flight"] = max(counts["max_in_flight"], counts["in_flight"])
        req.state[self._key] = True

    def on_response(self, req: Request, reply: Reply) -> None:
        """Count error replies (status 400 and up)."""
        if reply.status >= 400:
            with self._lock:
                self._counts["errors"] += 1

    def on_done(self, req: Request) -> None:
        """One request fewer in flight."""
        if req.state.pop(self._key, False):
            with self._lock:
                self._counts["in_flight"] -= 1

    @property
    def _key(self) -> str:
        return f"counting:{id(self)}"


class Rewrite(Rule):
    """Edits the bodies of forwarded replies: ``rewrite(method, path_and_query, body)``.

    Every forwarded reply is read whole while ``rewrite`` is set (filter on the path in
    the function, e.g. ``"list-type=2" in path`` for listings); replies made by other
    rules are left alone. Set ``rewrite`` to None to turn it off.
    """

    def __init__(self, rewrite: Callable[[str, str, bytes], bytes] | None = None) -> None:
        """Use ``rewrite`` (None: off)."""
        self.rewrite = rewrite

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Read every forwarded reply while a rewrite is set."""
        return self.rewrite is not None and not reply.made_by

    def on_response(self, req: Request, reply: Reply) -> None:
        """Replace the body by ``rewrite(method, path, body)``."""
        rewrite = self.rewrite
        if rewrite is not None and reply.body is not None and not reply.made_by:
            reply.body = rewrite(req.method, req.path, reply.body)


class Throttle(Rule):
    """Answers ``503 SlowDown`` to requests above ``rate_per_s`` (a token bucket).

    The bucket holds ``burst`` tokens (default: one second's worth, at least 1) and starts
    full; each request takes one, and a request finding none is refused.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        """Allow ``rate_per_s`` requests a second on average, ``burst`` at once."""
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.passed = 0
        self.slowdowns = 0

    def on_request(self, req: Request) -> Reply | None:
        """Take a token, or answer SlowDown."""
        with self._lock:
            now = time.monotonic()
            elapsed, self._stamp = now - self._stamp, now
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate_per_s)
            if self._tokens >= 1:
                self._tokens -= 1
                self.passed += 1
                return None
            self.slowdowns += 1
        return s3_error(req, 503, "SlowDown", "Please reduce your request rate.")
