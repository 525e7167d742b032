"""What uploads set on each object besides its bytes, as aws-cli's ``s3 cp`` does.

* **Content-Type**, guessed from the key's file name with Python's built-in :mod:`mimetypes`
  table only (never the machine's ``/etc/mime.types``, which differs between machines), or
  forced with ``content_type``; ``guess_mime_type=False`` sends none (S3 then stores
  ``binary/octet-stream``). A compressed file (``.gz``, ``.bz2``, ``.xz``...) is labelled as
  the compressed container (``application/gzip``), not as what it holds: no
  ``Content-Encoding`` is sent, so a browser must not be told ``data.csv.gz`` is ``text/csv``.
* **Server-side encryption** (``AES256`` or ``aws:kms`` with an optional key id),
  **storage class** and **Cache-Control**, the same for every object of a run.

Both engines send them on single PUTs and on ``CreateMultipartUpload``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefect_s3_concurrency.s3.object_headers import (
    ObjectAttributes,
    SseChoice,
    StorageClass,
    guess_content_type,
)

__all__ = ["ObjectAttributes", "SseChoice", "StorageClass", "UploadOptions", "guess_content_type"]


def _header_value(value: str | None) -> str | None:
    if value is not None and not (value.isprintable() and value.isascii()):
        raise ValueError("must be printable ASCII on one line (it is sent as an HTTP header)")
    return value


class UploadOptions(BaseModel):
    """Headers set on every uploaded object (see :mod:`s3.upload_options`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content_type: str | None = Field(
        default=None,
        description="Content-Type of every uploaded object, e.g. text/html (empty: guessed "
        "from each file name, as aws-cli does).",
    )
    guess_mime_type: bool = Field(
        default=True,
        description="Guess each object's Content-Type from its file name (Python's built-in "
        "table); off: none is sent and S3 stores binary/octet-stream.",
    )
    sse: SseChoice | None = Field(
        default=None,
        description="Server-side encryption: AES256 (S3-managed keys) or aws:kms (empty: the "
        "bucket's default).",
    )
    sse_kms_key_id: str | None = Field(
        default=None, description="KMS key id or ARN for sse=aws:kms (empty: the AWS-managed key)."
    )
    storage_class: StorageClass | None = Field(
        default=None, description="Storage class, e.g. STANDARD_IA (empty: STANDARD)."
    )
    cache_control: str | None = Field(
        default=None, description="Cache-Control of every object, e.g. max-age=3600."
    )

    @field_validator("content_type", "cache_control", "sse_kms_key_id")
    @classmethod
    def _one_header_line(cls, value: str | None) -> str | None:
        return _header_value(value or None)  # "" (an emptied form field) means "not set"

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> UploadOptions:
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise ValueError("sse_kms_key_id needs sse='aws:kms'")
        return self

    def attributes_for(self, key: str) -> ObjectAttributes | None:
        """The headers to send with ``key`` (None when there are none)."""
        content_type = self.content_type or (
            guess_content_type(key) if self.guess_mime_type else None
        )
        attrs = ObjectAttributes(
            content_type, self.cache_control, self.storage_class, self.sse, self.sse_kms_key_id
        )
        return attrs if attrs != ObjectAttributes() else None
