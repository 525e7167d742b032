"""A task that logs a signed request as botocore does, in whatever process runs it.

It imports nothing of the package: a process-pool worker running it redacts its logs only
if the worker's start installed the redaction.
"""

from __future__ import annotations

import logging

from prefect import task
from prefect.cache_policies import NO_CACHE

# As botocore.endpoint logs a request at DEBUG: the headers dict holds the signature.
SIGNED = (
    "{'url': 'http://127.0.0.1:9000/bkt', 'headers': {'Authorization': b'AWS4-HMAC-SHA256 "
    "Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, "
    "Signature=" + "5d" * 32 + "'}}"
)


@task(cache_policy=NO_CACHE)
def log_signed_request() -> list[str]:
    """Log :data:`SIGNED` at DEBUG on botocore's logger; return the messages as recorded."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("botocore.endpoint")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("Making request for ListObjectsV2 with params: %s", SIGNED)
    finally:
        logger.removeHandler(handler)
    return [record.getMessage() for record in records]
