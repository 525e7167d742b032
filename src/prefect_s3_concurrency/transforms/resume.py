"""Resume for ``square-objects``: outputs record what they were made from (no Prefect here).

Every uploaded output carries user metadata naming its input's ETag and the transform
(:func:`output_metadata`). On the next run, an input whose output exists is checked with
one HEAD (:func:`find_current_outputs`); if both still match, the input is skipped with no
download and no squaring. Servers differ in how they return metadata names (``rclone serve
s3`` capitalises them, ``Source-Etag``), so names are compared case-insensitively. An output
without this metadata (written by an older version, or by a server that forgot it) is simply
recomputed, which is always safe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from prefect_s3_concurrency.errors import describe_error

META_SOURCE_ETAG = "source-etag"
META_TRANSFORM = "transform"


def output_metadata(source_etag: str, transform: str) -> dict[str, str]:
    """User metadata for an output squared from an input with ``source_etag`` by ``transform``.

    Values are made ASCII (percent-encoded), as HTTP headers require.
    """
    return {
        META_SOURCE_ETAG: quote(source_etag, safe="-_.~"),
        META_TRANSFORM: quote(transform.strip(), safe="-_.~:"),
    }


def metadata_matches(found: Mapping[str, str], expected: Mapping[str, str]) -> bool:
    """True if ``found`` (as returned by HEAD) holds every ``expected`` item.

    Names are compared case-insensitively; an expected empty source ETag never matches, since
    then nothing proves the input is unchanged.
    """
    if not expected.get(META_SOURCE_ETAG):
        return False
    lowered = {str(k).lower(): str(v) for k, v in found.items()}
    return all(lowered.get(k.lower()) == v for k, v in expected.items())


def find_current_outputs(
    client: Any, bucket: str, items: Sequence[tuple[str, Mapping[str, str]]]
) -> tuple[list[str], dict[str, str]]:
    """HEAD each output and keep those whose metadata matches what this run would write.

    Args:
        client: boto3 S3 client.
        bucket: Destination bucket.
        items: ``(output key, expected metadata)`` pairs.

    Returns:
        The up-to-date keys, and key -> reason for outputs that could not be checked (those
        are recomputed, so an error here costs work, never correctness).
    """
    current: list[str] = []
    unchecked: dict[str, str] = {}
    for key, expected in items:
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:  # noqa: BLE001 - gone or unreadable: recompute it
            unchecked[key] = describe_error(exc)
            continue
        if metadata_matches(head.get("Metadata") or {}, expected):
            current.append(key)
    return current, unchecked
