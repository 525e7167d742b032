"""Checksums: the CRCs S3 stores and verifies, MD5s and multipart ETags, computed by streaming.

CRC64NVME is S3's default full-object checksum (every new object has one); CRC32C and CRC32
can be full-object checksums too. They come from ``awscrt`` (hardware CRCs, ~20 GiB/s here,
against ~0.7 GiB/s for MD5) and combine per range (:func:`combine`), so a ranged download
checks the whole object without reading it twice.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from awscrt import checksums as crt
from typing_extensions import Buffer

MIB = 2**20
CHUNK = MIB  # read size for checksums
CRC_ALGORITHMS: dict[str, tuple[Callable[[Buffer, int], int], int]] = {
    "crc64nvme": (crt.crc64nvme, 8),
    "crc32c": (crt.crc32c, 4),
    "crc32": (crt.crc32, 4),
}
_COMBINE: dict[str, Callable[[int, int, int], int]] = {
    "crc64nvme": crt.combine_crc64nvme,
    "crc32c": crt.combine_crc32c,
    "crc32": crt.combine_crc32,
}


def crc_b64(algorithm: str, value: int) -> str:
    """A CRC as S3 writes it in ``x-amz-checksum-*``: big-endian bytes, base64."""
    width = CRC_ALGORITHMS[algorithm][1]
    return base64.b64encode(value.to_bytes(width, "big")).decode()


def combine(algorithm: str, first: int, second: int, second_length: int) -> int:
    """The CRC of two byte strings from the CRC of each (and the second's length)."""
    return _COMBINE[algorithm](first, second, second_length)


@dataclass(frozen=True)
class StoredChecksum:
    """A full-object checksum S3 holds for an object: algorithm and base64 value."""

    algorithm: str
    value: str

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> StoredChecksum | None:
        """The full-object checksum in a reply's (lower-case) headers, if it has one.

        A composite checksum (``x-amz-checksum-type: COMPOSITE``, or a value ending in
        ``-N``) is a checksum of part checksums: not usable for the whole object here.
        """
        if str(headers.get("x-amz-checksum-type", "FULL_OBJECT")).upper() != "FULL_OBJECT":
            return None
        for algorithm in CRC_ALGORITHMS:
            value = headers.get(f"x-amz-checksum-{algorithm}")
            if value and "-" not in value:
                return cls(algorithm, str(value).strip())
        return None

    def matches(self, value: int) -> bool:
        """True if ``value`` (a CRC of this algorithm) is the stored one."""
        return crc_b64(self.algorithm, value) == self.value


@dataclass(frozen=True)
class CompositeChecksum:
    """A composite checksum S3 holds for a multipart object (boto3's and aws-cli's uploads):
    the CRC of the parts' CRCs (big-endian bytes, in order), written ``<base64>-N``."""

    algorithm: str
    value: str  # base64, without the ``-N``
    parts: int

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> CompositeChecksum | None:
        """The composite CRC in a reply's (lower-case) headers, if it has one."""
        for algorithm in CRC_ALGORITHMS:
            head, sep, count = str(headers.get(f"x-amz-checksum-{algorithm}", "")).rpartition("-")
            if sep and head.strip() and count.strip().isdigit() and int(count) >= 1:
                return cls(algorithm, head.strip(), int(count))
        return None

    def matches(self, part_crcs: list[int]) -> bool:
        """True if the CRCs of the parts (in order, this algorithm's) make this checksum."""
        crc_fn, width = CRC_ALGORITHMS[self.algorithm]
        total = 0
        for crc in part_crcs:
            total = crc_fn(crc.to_bytes(width, "big"), total)
        return len(part_crcs) == self.parts and crc_b64(self.algorithm, total) == self.value


class Hashes:
    """What a download or upload computes in one pass: CRC64NVME, and an MD5 if asked.

    Fed in order (one stream, or one range); :meth:`update` is the ``Digest`` protocol.
    """

    def __init__(self, md5: bool = False, algorithm: str = "crc64nvme") -> None:
        self.algorithm = algorithm
        self._crc_fn: Callable[[Buffer, int], int] | None = CRC_ALGORITHMS[algorithm][0]
        self.crc, self.length = 0, 0
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    def use(self, algorithm: str) -> None:
        """Compute ``algorithm``'s CRC instead (before any data was added)."""
        if self.length == 0 and algorithm in CRC_ALGORITHMS:
            self.algorithm, self._crc_fn = algorithm, CRC_ALGORITHMS[algorithm][0]

    def only(self, what: str) -> None:
        """Compute only the CRC (``"crc"``) or only the MD5 (``"md5"``), before any data.

        Without its CRC, :attr:`algorithm` is ``""``: nothing stored can match it unread.
        """
        if self.length == 0 and what == "crc":
            self._md5 = None
        elif self.length == 0 and what == "md5" and self._md5 is not None:
            self.algorithm, self._crc_fn = "", None

    def update(self, data: Buffer, /) -> None:
        """Add ``data``."""
        if self._crc_fn is not None:
            self.crc = self._crc_fn(data, self.crc)
        self.length += len(memoryview(data))
        if self._md5 is not None:
            self._md5.update(data)

    @property
    def md5(self) -> str | None:
        """The hex MD5 so far, if one is computed."""
        return self._md5.hexdigest() if self._md5 is not None else None

    def md5_digest(self) -> bytes:
        """The raw MD5 so far (computed with ``md5=True``)."""
        assert self._md5 is not None
        return self._md5.digest()


def combine_all(algorithm: str, parts: list[Hashes]) -> int:
    """The CRC of the concatenation of ``parts`` (in order)."""
    total = 0
    for part in parts:
        total = combine(algorithm, total, part.crc, part.length)
    return total


def file_crc(path: Path, algorithm: str = "crc64nvme") -> int:
    """The CRC of a whole file, read in chunks."""
    hashes = Hashes(algorithm=algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            hashes.update(block)
    return hashes.crc


def file_md5(path: Path) -> str:
    """Return the hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _per_part(path: Path, part_size: int, new: Callable[[], Hashes]) -> list[Hashes]:
    """The hashes of each ``part_size`` part of a file, in order."""
    parts: list[Hashes] = []
    with open(path, "rb") as fh:
        while True:
            hashes, left = new(), part_size
            while left and (block := fh.read(min(CHUNK, left))):
                hashes.update(block)
                left -= len(block)
            if left == part_size:
                return parts or [hashes]  # an empty file is one empty part
            parts.append(hashes)


def part_md5s(path: Path, part_size: int) -> list[bytes]:
    """The MD5 of each ``part_size`` part of a file, in order."""
    return [h.md5_digest() for h in _per_part(path, part_size, lambda: Hashes(md5=True))]


def part_crcs(path: Path, part_size: int, algorithm: str) -> list[int]:
    """The CRC (of ``algorithm``) of each ``part_size`` part of a file, in order."""
    return [h.crc for h in _per_part(path, part_size, lambda: Hashes(algorithm=algorithm))]


def multipart_etag(path: Path, part_size: int) -> str:
    """Return the S3 multipart ETag (``md5-of-part-md5s-N``) a file would have."""
    parts = part_md5s(path, part_size)
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(parts)}"
