"""S3's size limits, and the part size that makes a file fit in them.

A multipart upload has at most 10,000 parts of 5 MiB to 5 GiB (the last may be smaller); a
single PUT carries at most 5 GiB; one DeleteObjects names at most 1,000 keys.
:func:`part_size_for` starts at 8 MiB (aws-cli's and boto3's default) and doubles, as
s3transfer's ``ChunksizeAdjuster`` does, until the file fits.
Tests shrink every limit with the test-only environment variable ``PREFECT_S3_TEST_LIMITS``
(``"max_parts=4,min_part=1024,..."``) to keep their data small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from prefect_s3_concurrency.errors import ConfigurationError

MIB, GIB, TIB = 2**20, 2**30, 2**40
TEST_ENV = "PREFECT_S3_TEST_LIMITS"


@dataclass(frozen=True)
class Limits:
    """S3's limits on one upload, and where this project starts multipart uploads."""

    max_parts: int = 10_000
    min_part: int = 5 * MIB
    max_part: int = 5 * GIB
    max_put: int = 5 * GIB  # one PUT
    max_object: int = 5 * TIB
    default_part: int = 8 * MIB
    multipart_threshold: int = 16 * MIB
    max_delete_keys: int = 1000  # one DeleteObjects


S3_LIMITS = Limits()


def current() -> Limits:
    """The limits in force: S3's, or those the test-only setting scales down."""
    spec = os.environ.get(TEST_ENV, "")
    if not spec:
        return S3_LIMITS
    try:
        fields = dict(item.split("=", 1) for item in spec.split(",") if item)
        return replace(S3_LIMITS, **{k.strip(): int(v) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad {TEST_ENV}={spec!r}: {exc}") from None


def part_size_for(size: int, limits: Limits = S3_LIMITS) -> int:
    """The part size for a ``size``-byte multipart upload: at most ``max_parts`` parts.

    Raises:
        ConfigurationError: If no part size within the limits fits (over 5 TiB on S3).
    """
    if size > limits.max_object:
        raise ConfigurationError(
            f"{size:,} bytes is more than S3 stores in one object ({limits.max_object:,})"
        )
    part = max(limits.default_part, limits.min_part)
    while -(-size // part) > limits.max_parts:
        part *= 2
    part = min(part, limits.max_part)
    if -(-size // part) > limits.max_parts:
        raise ConfigurationError(f"{size:,} bytes do not fit in {limits.max_parts:,} parts")
    return part
