"""S3's checksum algorithms, computed incrementally, and how S3 combines part checksums.

Values are encoded as S3 sends them: base64 of the big-endian digest (4 bytes for the
CRC32s, 8 for CRC64NVME, the hash digest for SHA1/SHA256). CRCs come from
``awscrt.checksums``; a full-object CRC of a multipart upload is the parts' CRCs
combined (zlib's ``crc32_combine`` method, for any reflected CRC); a composite checksum
is the checksum of the concatenated part digests, with ``-<parts>`` appended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from awscrt import checksums

__all__ = [
    "ALGORITHMS", "Digest", "combine_crc", "composite", "decode", "encode", "full_object", "label",
]

# name -> (digest size in bytes, reflected polynomial for CRCs, or None for hashes)
ALGORITHMS: dict[str, tuple[int, int | None]] = {
    "crc32": (4, 0xEDB88320),
    "crc32c": (4, 0x82F63B78),
    "crc64nvme": (8, 0x9A6C9329AC4BC9B5),
    "sha1": (20, None),
    "sha256": (32, None),
}
_CRC: dict[str, Callable[[bytes, int], int]] = {
    "crc32": checksums.crc32,
    "crc32c": checksums.crc32c,
    "crc64nvme": checksums.crc64nvme,
}


def label(algorithm: str) -> str:
    """The name S3 uses in messages and XML elements: ``CRC32``, ``SHA256``, ..."""
    return algorithm.upper()


def encode(algorithm: str, value: int | bytes) -> str:
    """Base64 of a digest (bytes) or of a CRC value (int, big-endian)."""
    if isinstance(value, int):
        value = value.to_bytes(ALGORITHMS[algorithm][0], "big")
    return base64.b64encode(value).decode()


def decode(algorithm: str, text: str) -> bytes | None:
    """The digest a base64 value stands for, or None if it is not one of the right size."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == ALGORITHMS[algorithm][0] else None


class Digest:
    """An incremental checksum of one algorithm."""

    def __init__(self, algorithm: str) -> None:
        """Start an empty checksum (``md5`` too, for Content-MD5)."""
        self.algorithm = algorithm
        self.length = 0
        self.crc = 0
        self._crc = _CRC.get(algorithm)
        self._hash = None if self._crc else hashlib.new(algorithm)

    def update(self, data: bytes) -> None:
        """Add ``data``."""
        self.length += len(data)
        if self._crc is not None:
            self.crc = self._crc(data, self.crc)
        elif self._hash is not None:
            self._hash.update(data)

    def digest(self) -> bytes:
        """The big-endian digest so far."""
        if self._hash is not None:
            return self._hash.digest()
        return self.crc.to_bytes(ALGORITHMS[self.algorithm][0], "big")

    def b64(self) -> str:
        """The digest as S3 encodes it."""
        return base64.b64encode(self.digest()).decode()


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def combine_crc(algorithm: str, crc1: int, crc2: int, length2: int) -> int:
    """CRC of ``A + B`` from the CRC of A, the CRC of B and the length of B."""
    width, poly = ALGORITHMS[algorithm][0] * 8, ALGORITHMS[algorithm][1]
    if poly is None:
        raise ValueError(f"{algorithm} is not a CRC")
    if length2 <= 0:
        return crc1
    odd = [poly] + [1 << i for i in range(width - 1)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:  # apply length2 zero bytes to crc1
        even = _gf2_square(odd)
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def full_object(algorithm: str, parts: list[tuple[int, int]]) -> str:
    """Full-object checksum from the parts' ``(crc, length)`` in order."""
    crc = 0
    for part_crc, length in parts:
        crc = combine_crc(algorithm, crc, part_crc, length)
    return encode(algorithm, crc)


def composite(algorithm: str, digests: list[bytes]) -> str:
    """Composite checksum: the checksum of the part digests, then ``-<number of parts>``."""
    total = Digest(algorithm)
    for digest in digests:
        total.update(digest)
    return f"{total.b64()}-{len(digests)}"
