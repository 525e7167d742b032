"""The ``prefect-s3.objects.landed`` event: a run announces the objects it has landed.

On success, ``download-prefix``, ``upload-directory`` and ``square-objects`` emit one event
each, so a deployment can start when data lands (``triggers:`` in prefect.yaml, see
docs/pipelines-of-deployments.md):

* resource id: the destination, ``s3://bucket/prefix`` as the run was given it, or a local
  directory as an absolute ``file://`` URL (``prefect-s3.path`` holds it as a plain path);
* resource labels: ``prefect-s3.flow-run-id``, ``prefect-s3.flow-name``,
  ``prefect-s3.deployment`` (``flow-name/deployment-name``; empty without a deployment, so a
  trigger can exclude its own deployment with ``"!flow/name"``) and, with a deployment,
  ``prefect-s3.deployment-id``. Prefect adds the flow run, flow and deployment as related
  resources;
* payload: ``objects`` and ``bytes`` written by the run, ``skipped`` (already current),
  ``source`` (where it read from), ``direction`` (download, upload or square).

A run that fails, a dry run, and a run that wrote nothing (empty source, everything already
current) emit nothing, so nothing downstream starts on them (Prefect's own
``prefect.flow-run.Failed`` event marks a failed run). Events carry no credentials and no
endpoint URL: locations are ``s3://bucket/prefix`` URLs or local paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.events import emit_event

from prefect_s3_concurrency.flows.common import TransferSummary
from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary

LANDED = "prefect-s3.objects.landed"
DEPLOYMENT_LABEL = "prefect-s3.deployment"

Summary = TransferSummary | PipelineSummary


@dataclass(frozen=True)
class RunIdentity:
    """The flow run an event comes from (its labels)."""

    flow_run_id: str
    flow_name: str
    deployment_id: str | None = None
    deployment: str = ""  # "flow-name/deployment-name", or "" without a deployment


def resource_id(destination: str) -> str:
    """The event's resource id: an ``s3://`` URL as given, a local directory as a file URL."""
    if destination.startswith("s3://"):
        return destination
    return Path(destination).expanduser().resolve().as_uri()


def landed_payload(summary: Summary) -> dict[str, Any] | None:
    """What the run landed, or None if it landed nothing (failed, dry run, nothing written)."""
    if summary.failed:
        return None
    if isinstance(summary, PipelineSummary):
        objects, size, direction = summary.uploaded, summary.output_bytes, "square"
    elif summary.dry_run:
        return None
    else:
        objects, size, direction = summary.objects, summary.bytes, summary.direction
    if not objects:
        return None
    return {
        "objects": objects, "bytes": size, "skipped": summary.skipped,
        "source": summary.source, "direction": direction,
    }  # fmt: skip


def landed_resource(destination: str, run: RunIdentity) -> dict[str, str]:
    """The event's resource: the destination, labelled with the run that wrote it."""
    resource = {
        "prefect.resource.id": resource_id(destination),
        "prefect-s3.flow-run-id": run.flow_run_id,
        "prefect-s3.flow-name": run.flow_name,
        DEPLOYMENT_LABEL: run.deployment,
    }
    if resource["prefect.resource.id"].startswith("file://"):
        resource["prefect-s3.path"] = str(Path(destination).expanduser().resolve())
    if run.deployment_id:
        resource["prefect-s3.deployment-id"] = run.deployment_id
    return resource


def current_run() -> RunIdentity | None:
    """The current flow run's identity, or None outside a flow run.

    Raises:
        RuntimeError: If the run has a deployment whose name cannot be read.
    """
    from prefect.context import FlowRunContext
    from prefect.runtime import deployment

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    flow_name = ctx.flow.name if ctx.flow is not None else ""
    deployment_id = ctx.flow_run.deployment_id
    if deployment_id is None:
        return RunIdentity(str(ctx.flow_run.id), flow_name)
    name = deployment.get_name()
    if not name:
        raise RuntimeError(f"deployment {deployment_id} has no readable name")
    return RunIdentity(str(ctx.flow_run.id), flow_name, str(deployment_id), f"{flow_name}/{name}")


def announce_landed(summary: Summary) -> None:
    """Emit ``prefect-s3.objects.landed`` for a successful run that wrote objects.

    Call it once, at the end of a run's success path. Without a deployment name to label the
    event with (so a trigger could not exclude its own deployment), nothing is emitted.
    """
    payload = landed_payload(summary)
    if payload is None:
        return
    logger = get_run_logger()
    try:
        run = current_run()
    except Exception as exc:  # noqa: BLE001 - an event must never fail a finished run
        logger.warning("no %s event: the run's deployment is unknown (%s)", LANDED, exc)
        return
    if run is None:
        return
    resource = landed_resource(summary.destination, run)
    emit_event(event=LANDED, resource=resource, payload=payload)
    logger.info("emitted %s for %s", LANDED, resource["prefect.resource.id"])
