"""One cheap request before a run: is the bucket there, are the credentials good?

A command line checks its S3 location with :func:`probe` while the Prefect server starts, so
a wrong bucket, wrong keys, a denied bucket or a wrong endpoint are reported in about a
second instead of after the flow run began.
"""

from __future__ import annotations

from prefect_s3_concurrency.errors import S3PipelineError
from prefect_s3_concurrency.local.paths import S3Url
from prefect_s3_concurrency.s3.connection import S3Connection, get_s3_client
from prefect_s3_concurrency.s3.replies import translate_boto_error


def probe(conn: S3Connection, url: S3Url) -> bool:
    """List at most one key under ``url``'s folder; return whether there is one.

    Args:
        conn: How to reach S3 (without a credentials block: loading one needs Prefect's API).
        url: The location to check.

    Raises:
        S3AccessError: For a missing bucket, denied access, bad credentials or an endpoint
            that cannot be reached.
    """
    client = get_s3_client(conn)
    try:
        reply = client.list_objects_v2(Bucket=url.bucket, Prefix=url.folder, MaxKeys=1)
    except S3PipelineError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as a clear one-line error
        raise translate_boto_error(exc, url.bucket, client.meta.endpoint_url) from None
    return bool(reply.get("KeyCount") or reply.get("Contents"))


def object_exists(conn: S3Connection, url: S3Url) -> bool:
    """True if ``url``'s prefix is the key of an object (one HEAD request)."""
    try:
        get_s3_client(conn).head_object(Bucket=url.bucket, Key=url.prefix)
    except Exception:  # noqa: BLE001 - no such object (or no answer): not an object
        return False
    return True
