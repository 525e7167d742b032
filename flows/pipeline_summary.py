"""The typed summary of a ``square-objects`` run, its table rows, and the run's failure error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from prefect_s3_concurrency.errors import FailedWithPayload, run_failure_message
from prefect_s3_concurrency.flows.common import keyed_rows


class PipelineSummary(BaseModel):
    """What a download -> square -> upload run did.

    Byte and number counts cover the objects processed by this run, not resumed ones.
    Stage seconds are *busy* wall seconds: time during which at least one task of that stage
    ran. With overlap their sum exceeds ``wall_seconds``; ``stage_spans`` gives each stage's
    ``[first start, last end]`` in seconds since the flow started.
    """

    source: str
    destination: str
    transform: str
    objects: int = Field(0, description="Objects whose output is now at the destination.")
    processed: int = Field(0, description="Objects downloaded and squared by this run.")
    uploaded: int = Field(0, description="Outputs uploaded by this run.")
    skipped: int = Field(0, description="Outputs already up to date: resumed or identical.")
    resumed: int = Field(
        0, description="Of the skipped: made from the same input and transform by an earlier "
        "run, so neither downloaded nor squared again.",
    )  # fmt: skip
    stale_scratch_removed: int = Field(0, description="Scratch dirs of killed runs removed.")
    input_bytes: int = 0
    output_bytes: int = 0
    numbers: int = Field(0, description="Numbers transformed.")
    chunks: int = 0
    used_processes: bool = False
    mode_reason: str = ""
    cpu_workers: int = 0
    worker_pids: list[int] = Field(default_factory=list)
    flow_pid: int = 0
    api_url: str | None = Field(None, description="Prefect API the flow reported to.")
    worker_api_urls: list[str | None] = Field(default_factory=list)
    download_seconds: float = 0.0
    square_seconds: float = 0.0
    square_cpu_seconds: float = Field(0.0, description="Sum of the chunks' squaring times.")
    upload_seconds: float = 0.0
    wall_seconds: float = 0.0
    stage_spans: dict[str, list[float]] = Field(default_factory=dict)
    max_scratch_bytes: int = 0
    peak_scratch_bytes: int = 0
    rejected: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
    throttled: int = Field(0, description="SlowDown replies S3 gave the transfer batches.")

    def rows(self) -> list[dict[str, Any]]:
        """Return the summary as table rows (``item``, ``value``)."""
        mib = 2**20
        rows = [
            ("source", self.source),
            ("destination", self.destination),
            ("transform", self.transform),
            ("objects at destination", self.objects),
            ("processed (downloaded and squared)", self.processed),
            ("uploaded / skipped", f"{self.uploaded} / {self.skipped}"),
            ("skipped: resumed / identical",
             f"{self.resumed} / {self.skipped - self.resumed}"),
            ("input MiB", round(self.input_bytes / mib, 3)),
            ("output MiB", round(self.output_bytes / mib, 3)),
            ("numbers squared", self.numbers),
            ("chunks", self.chunks),
            ("processes used", self.used_processes),
            ("why", self.mode_reason),
            ("worker PIDs (flow PID)", f"{self.worker_pids} ({self.flow_pid})"),
            ("download seconds (busy)", round(self.download_seconds, 3)),
            ("square seconds (busy)", round(self.square_seconds, 3)),
            ("square CPU seconds (sum)", round(self.square_cpu_seconds, 3)),
            ("upload seconds (busy)", round(self.upload_seconds, 3)),
            ("wall seconds", round(self.wall_seconds, 3)),
            ("peak / max scratch MiB",
             f"{self.peak_scratch_bytes / mib:.1f} / {self.max_scratch_bytes / mib:.0f}"),
            ("stale scratch dirs removed", self.stale_scratch_removed),
            ("rejected keys", len(self.rejected)),
            ("failed keys", len(self.failed)),
            ("SlowDown replies (backed off)", self.throttled),
        ]  # fmt: skip
        table = [{"item": item, "value": value} for item, value in rows]
        return table + keyed_rows("failed", self.failed) + keyed_rows("rejected", self.rejected)


class PipelineFailed(FailedWithPayload):
    """Raised at the end of a run in which some objects failed or keys were rejected (unless
    allowed); ``summary`` has them all."""

    def __init__(self, summary: PipelineSummary, allow_rejected: bool = False) -> None:
        self.summary, self.allow_rejected = summary, allow_rejected
        rejected = {} if allow_rejected else summary.rejected
        super().__init__(run_failure_message("square-objects", summary.failed, rejected))
