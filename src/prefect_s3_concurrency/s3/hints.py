"""Hints for runs that found nothing to do: is the "prefix" really one object's key?"""

from __future__ import annotations

from prefect_s3_concurrency.errors import printable
from prefect_s3_concurrency.local.paths import S3Url
from prefect_s3_concurrency.s3.connection import S3Connection, get_s3_client


def exact_key_hint(conn: S3Connection, url: S3Url) -> str:
    """Return a hint when ``url``, whose listing as a folder was empty, names an object.

    ``s3://b/dir/x.txt`` lists the keys under ``dir/x.txt/``; if ``dir/x.txt`` itself is an
    object, the user most likely meant ``s3://b/dir`` with ``--include 'x.txt'``.

    Returns:
        The hint, or ``""`` when the prefix is not an object's key (or S3 cannot say).
    """
    key = url.prefix
    if not key or key.endswith("/"):
        return ""
    try:
        get_s3_client(conn).head_object(Bucket=url.bucket, Key=key)
    except Exception:  # noqa: BLE001 - no such object, or no answer: no hint
        return ""
    parent, _, name = key.rpartition("/")
    return (
        f"s3://{url.bucket}/{printable(key)} is an object, not a prefix: did you mean "
        f"s3://{url.bucket}/{printable(parent)} with --include '{printable(name)}'?"
    )
