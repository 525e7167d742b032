"""A reverse proxy for S3 tests: forwards to rclone/moto and lets pluggable rules steer it.

``S3Proxy(upstream_url, rules=[...])`` forwards every request to the upstream S3 server;
its rules (settable while it runs) see each request, may answer it themselves, edit its
headers, and edit the reply. Rules:

* ``Faults``: seeded injected faults (HTTP errors, cut or corrupted replies, latency).
* ``Counting``: requests per operation, ranged GETs, errors, requests in flight.
* ``Rewrite``: edits reply bodies (e.g. listings).
* ``Throttle``: ``503 SlowDown`` above a request rate.
* ``StrictS3``: Amazon S3's behaviour where rclone and moto are lenient (its parts,
  ``Regions``, ``Limits``, ``KmsEtags``, ``Checksums``, ... are rules too).

Standard library and ``awscrt`` only: it must not import the package under test.
``FaultProxy`` is the proxy with ``Faults`` (and a ``Rewrite``) built in.
"""

from .core import S3Proxy
from .exchange import Headers, Reply, Request, Rule, s3_error
from .faults import ALL_KINDS, FAULT_KINDS, FaultProxy, Faults
from .integrity import Checksums
from .kms import KmsEtags
from .rules import COUNTED_OPS, Counting, Rewrite, Throttle
from .strict import Archived, Complete200Error, Limits, Regions, SseC
from .strict_s3 import StrictS3

__all__ = [
    "ALL_KINDS", "COUNTED_OPS", "FAULT_KINDS", "Archived", "Checksums", "Complete200Error",
    "Counting", "FaultProxy", "Faults", "Headers", "KmsEtags", "Limits", "Regions", "Reply",
    "Request", "Rewrite", "Rule", "S3Proxy", "SseC", "StrictS3", "Throttle", "s3_error",
]  # fmt: skip
