"""The records transfer functions pass around: listed objects, local files, batch results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect_s3_concurrency.errors import describe_error, is_permanent
from prefect_s3_concurrency.s3.etag import ETag

if TYPE_CHECKING:
    from prefect_s3_concurrency.s3.object_headers import ObjectAttributes


@dataclass(frozen=True)
class S3Object:
    """An object from a listing: key, size in bytes, ETag (unquoted, case kept), and, when
    the listing gives them, its LastModified (epoch seconds) and storage class."""

    key: str
    size: int
    etag: str = ""
    last_modified: float | None = field(default=None, compare=False)
    storage_class: str = field(default="", compare=False)

    @property
    def tag(self) -> ETag:
        """The ETag as a value (its encryption unknown: a listing does not say)."""
        return ETag(self.etag)


@dataclass(frozen=True)
class LocalFile:
    """A local file to upload, the key it goes to, optional user metadata and headers."""

    path: str
    key: str
    size: int
    metadata: dict[str, str] | None = field(default=None, compare=False, hash=False)
    attributes: ObjectAttributes | None = field(default=None, compare=False, hash=False)


@dataclass
class BatchResult:
    """What one batch did. ``failed`` maps key to a one-line reason."""

    transferred: list[str] = field(default_factory=list)
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    permanent: list[str] = field(default_factory=list)  # failed keys a retry cannot fix
    size_only: list[str] = field(default_factory=list)  # transferred, verified by size only
    throttled: int = 0  # SlowDown replies S3 gave the batch (it backed off on each)

    def merge(self, other: BatchResult) -> None:
        """Add ``other``'s counts into this result."""
        self.transferred += other.transferred
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.seconds += other.seconds
        self.permanent += other.permanent
        self.size_only += other.size_only
        self.throttled += other.throttled

    def fail(self, key: str, exc: BaseException) -> None:
        """Record that ``key`` failed with ``exc``."""
        self.failed[key] = describe_error(exc)
        if is_permanent(exc):
            self.permanent.append(key)

    @property
    def retryable(self) -> bool:
        """True if some failure might go away on a retry."""
        return bool(set(self.failed) - set(self.permanent))
