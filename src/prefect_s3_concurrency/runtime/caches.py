"""Every process-wide cache, named in one place; :func:`clear_all` empties them all.

What a process learns about S3 endpoints, for its whole life (a new process learns anew):

* ``IGNORES_RANGE``: endpoints that answered a ranged GET with the whole object; whole-object
  GETs there from then on (boto3 engine).
* ``PARTIAL_AS_200``: endpoints that send a range with 200 instead of 206 (rclone); object_store
  refuses those replies, so ranged GETs there go through botocore (obstore engine).
* ``CRC_REFUSED``: endpoints that refuse or ignore ``x-amz-checksum-crc64nvme`` on uploads.
* ``CRC_ECHOED``: endpoints that echoed it: they check it, so no ``Content-MD5`` is needed.
* ``BUCKET_REGIONS``: ``(endpoint URL, bucket) -> region``, as S3 stated it.

Counted: ``VERIFY_REQUESTS``, the requests made only to verify (``head``: HeadObject with
ChecksumMode or PartNumber); the benchmark reports them per 1,000 objects.

Built once and reused, with :func:`cached` (:func:`cached_names` lists them):
``s3.connection`` sessions and clients, ``s3.engines.obstore_engine`` stores,
``s3.engines.listing``'s HTTP pool, ``transforms.registry`` entry points and resolved
transforms.

Process state that is not a cache stays with its code: the secrets to mask
(``runtime.redact``, never forgotten), the signals received (``runtime.interrupt``) and the
work of a batch task's earlier attempts (``tasks.s3``).
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

IGNORES_RANGE: set[str] = set()
PARTIAL_AS_200: set[str] = set()
CRC_REFUSED: set[str] = set()
CRC_ECHOED: set[str] = set()
BUCKET_REGIONS: dict[tuple[str, str], str] = {}
VERIFY_REQUESTS: collections.Counter[str] = collections.Counter()
_LEARNED = (IGNORES_RANGE, PARTIAL_AS_200, CRC_REFUSED, CRC_ECHOED, BUCKET_REGIONS, VERIFY_REQUESTS)
_FUNCTIONS: list[Any] = []


def cached(maxsize: int | None = 32) -> Callable[[F], F]:
    """``functools.lru_cache(maxsize)``, registered here so :func:`clear_all` empties it."""

    def wrap(function: F) -> F:
        wrapper = functools.lru_cache(maxsize=maxsize)(function)
        _FUNCTIONS.append(wrapper)
        return wrapper  # type: ignore[return-value]

    return wrap


def cached_names() -> list[str]:
    """``module.function`` of every function cached with :func:`cached` (imported so far)."""
    return [f"{f.__module__}.{f.__qualname__}" for f in _FUNCTIONS]


def clear_all() -> None:
    """Forget everything learned and built: the next request finds out anew (tests, benchmarks)."""
    for learned in _LEARNED:
        learned.clear()
    for function in _FUNCTIONS:
        function.cache_clear()
