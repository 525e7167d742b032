"""The headers an upload sends besides the bytes (stdlib only: the command line imports it).

See :mod:`s3.upload_options` for what they mean and how a run chooses them.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any, Literal

SseChoice = Literal["AES256", "aws:kms"]
StorageClass = Literal[
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
    "GLACIER", "DEEP_ARCHIVE", "GLACIER_IR",
]  # fmt: skip
# Python's own table: MimeTypes(filenames=()) reads no file of the machine.
_TYPES = mimetypes.MimeTypes(filenames=())
_COMPRESSED = {
    "gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
    "compress": "application/x-compress", "br": "application/x-brotli",
}  # fmt: skip


def guess_content_type(name: str) -> str | None:
    """The Content-Type for a file or key ``name`` from Python's built-in table (None: unknown)."""
    base = name.rsplit("/", 1)[-1]
    kind, encoding = _TYPES.guess_type(base, strict=True)
    if encoding is not None:
        return _COMPRESSED.get(encoding)
    return kind


@dataclass(frozen=True)
class ObjectAttributes:
    """The headers one upload sends besides user metadata (None: not sent)."""

    content_type: str | None = None
    cache_control: str | None = None
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None

    def boto3_args(self) -> dict[str, str]:
        """``PutObject``/``CreateMultipartUpload`` arguments."""
        args = {
            "ContentType": self.content_type, "CacheControl": self.cache_control,
            "StorageClass": self.storage_class, "ServerSideEncryption": self.sse,
            "SSEKMSKeyId": self.sse_kms_key_id,
        }  # fmt: skip
        return {k: v for k, v in args.items() if v}

    def object_store_attributes(self) -> dict[str, str]:
        """obstore ``attributes`` (encryption is a setting of the store instead)."""
        attrs = {
            "Content-Type": self.content_type, "Cache-Control": self.cache_control,
            "Storage-Class": self.storage_class,
        }  # fmt: skip
        return {k: v for k, v in attrs.items() if v}


def encryption_of(attributes: ObjectAttributes | None) -> tuple[str | None, str | None]:
    """``(sse, kms key id)`` of ``attributes`` (obstore sets them per store, not per request)."""
    if attributes is None:
        return None, None
    return attributes.sse, attributes.sse_kms_key_id


def store_encryption_config(sse: str | None, kms_key_id: str | None) -> dict[str, Any]:
    """The obstore ``S3Config`` entries for this encryption."""
    config: dict[str, Any] = {}
    if sse:
        config["server_side_encryption"] = sse
    if kms_key_id:
        config["sse_kms_key_id"] = kms_key_id
    return config
