"""S3 ETags as values: parsed once where a listing or a reply gives them, never re-guessed.

An ETag is one of three kinds:

* ``MD5``: 32 hex digits, from a single PUT, and not known to be encrypted with SSE-KMS or
  SSE-C (those ETags look the same but are not the MD5 of the data);
* ``MULTIPART``: ``<32 hex>-N``, the MD5 of the parts' MD5s; checkable only with the part
  size S3 used, which is learned from S3 (HeadObject ``PartNumber=1``), never guessed;
* ``OPAQUE``: anything else (an encrypted object's, a server's own format).

The value keeps its case: :attr:`ETag.header` is what goes back in ``If-Match``, exactly as
the server sent it (quoted).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

_HEX = frozenset("0123456789abcdefABCDEF")
# x-amz-server-side-encryption values whose ETag is not the MD5 of the data
_NOT_MD5_SSE = frozenset({"aws:kms", "aws:kms:dsse"})


class Kind(enum.Enum):
    """What an ETag says about the data."""

    MD5 = "md5"
    MULTIPART = "multipart"
    OPAQUE = "opaque"


def unquote(raw: str | None) -> str:
    """The ETag without surrounding whitespace and quotes (case kept)."""
    return (raw or "").strip().strip('"')


def _is_hex32(text: str) -> bool:
    return len(text) == 32 and all(c in _HEX for c in text)


@dataclass(frozen=True)
class ETag:
    """One ETag as a server sent it, and whether its object is encrypted so that the ETag is
    not an MD5 (``aws:kms``, ``aws:kms:dsse``, SSE-C); None when unknown (a listing)."""

    value: str
    encrypted: bool | None = None

    @classmethod
    def parse(cls, raw: str | None, headers: Mapping[str, str] | None = None) -> ETag:
        """Make an ETag from a raw (quoted or not) value and, if known, the reply's headers
        (lower-case names; see :func:`encrypted_by`)."""
        return cls(unquote(raw), None if headers is None else encrypted_by(headers))

    @property
    def kind(self) -> Kind:
        """MD5, MULTIPART or OPAQUE (see the module docstring)."""
        if self.encrypted:
            return Kind.OPAQUE
        if _is_hex32(self.value):
            return Kind.MD5
        return Kind.MULTIPART if self.parts is not None else Kind.OPAQUE

    @property
    def md5(self) -> str | None:
        """The data's MD5 (lower-case hex) if this ETag is one, else None."""
        return self.value.lower() if self.kind is Kind.MD5 else None

    @property
    def parts(self) -> int | None:
        """The part count ``N`` of a multipart ETag (``<32 hex>-N``, N >= 1), else None."""
        if self.encrypted:
            return None
        head, sep, count = self.value.rpartition("-")
        if sep and count.isdigit() and _is_hex32(head) and int(count) >= 1:
            return int(count)
        return None

    @property
    def header(self) -> str:
        """The value for ``If-Match``: the ETag exactly as received, in its quotes."""
        return f'"{self.value}"'

    def matches_multipart(self, part_md5s: list[bytes]) -> bool:
        """True if the MD5s of the parts (in order) make this multipart ETag."""
        combined = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
        return f"{combined}-{len(part_md5s)}" == self.value.lower()

    def __str__(self) -> str:
        return self.value


def encrypted_by(headers: Mapping[str, str]) -> bool:
    """True if a reply's headers say its ETag is not an MD5: SSE-KMS (also DSSE) or SSE-C."""
    sse = str(headers.get("x-amz-server-side-encryption", "")).lower()
    return sse in _NOT_MD5_SSE or bool(
        headers.get("x-amz-server-side-encryption-customer-algorithm")
    )
