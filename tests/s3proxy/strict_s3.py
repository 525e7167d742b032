"""``StrictS3``: one rule bundling the rules that make rclone or moto behave like S3."""

from __future__ import annotations

from .exchange import Reply, Request, Rule
from .integrity import Checksums
from .kms import KmsEtags
from .strict import Archived, Complete200Error, GiB, Limits, MiB, Regions, SseC

__all__ = ["StrictS3"]


class StrictS3(Rule):
    """Amazon S3's behaviour where rclone and moto are lenient; each part switchable.

    The parts are rules of their own, run in this order: ``regions`` (Regions),
    ``ssec`` (SseC), ``archived`` (Archived), ``limits`` (Limits), ``checksums``
    (Checksums), ``kms`` (KmsEtags), ``complete_200`` (Complete200Error). A part that is
    switched off is None; the parts' settings may be changed while the proxy runs.
    """

    def __init__(
        self,
        *,
        kms_buckets: set[str] | None = None,
        kms_key_id: str | None = None,
        bucket_regions: dict[str, str] | None = None,
        default_region: str = "us-east-1",
        check_regions: bool = True,
        limits: bool = True,
        max_parts: int = 10_000,
        min_part_size: int = 5 * MiB,
        max_part_size: int = 5 * GiB,
        max_put_size: int = 5 * GiB,
        max_delete_keys: int = 1000,
        complete_200_errors: int = 0,
        archived_keys: dict[str, str] | None = None,
        ssec_keys: set[str] | None = None,
        checksums: bool = True,
        add_default_crc64nvme: bool = True,
    ) -> None:
        """Configure the parts.

        Args:
            kms_buckets: Buckets whose objects behave as SSE-KMS encrypted (ETags).
            kms_key_id: KMS key ARN the replies name (a fixed made-up one by default).
            bucket_regions: Region of each bucket; the others are in ``default_region``.
            default_region: Region of the buckets not in ``bucket_regions``.
            check_regions: Refuse requests signed for another region than the bucket's.
            limits: Enforce the size and count limits below.
            max_parts: Highest part number.
            min_part_size: Smallest part but the last, in bytes.
            max_part_size: Largest part, in bytes.
            max_put_size: Largest single PUT, in bytes.
            max_delete_keys: Most keys in one DeleteObjects.
            complete_200_errors: Completes answered ``200`` with an ``<Error>`` body.
            archived_keys: ``bucket/key`` -> storage class of archived objects.
            ssec_keys: ``bucket/key`` of objects stored with SSE-C.
            checksums: Verify, store and return checksums.
            add_default_crc64nvme: Store a CRC64NVME for uploads without a checksum.
        """
        self.regions = Regions(bucket_regions, default_region) if check_regions else None
        self.ssec = SseC(ssec_keys) if ssec_keys else None
        self.archived = Archived(archived_keys) if archived_keys else None
        self.limits = (
            Limits(max_parts, min_part_size, max_part_size, max_put_size, max_delete_keys)
            if limits
            else None
        )
        self.checksums = Checksums(True, add_default_crc64nvme) if checksums else None
        self.kms = KmsEtags(kms_buckets, kms_key_id) if kms_buckets else None
        self.complete_200 = Complete200Error(complete_200_errors)

    @property
    def parts(self) -> list[Rule]:
        """The parts switched on, in order."""
        parts = (
            self.regions, self.ssec, self.archived, self.limits, self.checksums, self.kms,
            self.complete_200,
        )  # fmt: skip
        return [part for part in parts if part is not None]

    def _seen(self, req: Request) -> list[Rule]:
        return req.state.setdefault(f"strict:{id(self)}", [])

    def on_request(self, req: Request) -> Reply | None:
        """Pass the request through the parts until one answers."""
        seen = self._seen(req)
        for part in self.parts:
            seen.append(part)
            reply = part.on_request(req)
            if reply is not None:
                reply.made_by = reply.made_by or type(part).__name__
                return reply
        return None

    def on_request_end(self, req: Request) -> Reply | None:
        """Let each part that saw the request check its payload."""
        for part in self._seen(req):
            reply = part.on_request_end(req)
            if reply is not None:
                reply.made_by = reply.made_by or type(part).__name__
                return reply
        return None

    def needs_body(self, req: Request, reply: Reply) -> bool:
        """Whether any part that saw the request needs the reply body."""
        return any(part.needs_body(req, reply) for part in self._seen(req))

    def on_response(self, req: Request, reply: Reply) -> None:
        """Let the parts edit the reply, last part first."""
        for part in reversed(self._seen(req)):
            part.on_response(req, reply)

    def on_done(self, req: Request) -> None:
        """Tell the parts the exchange is over."""
        for part in self._seen(req):
            part.on_done(req)
