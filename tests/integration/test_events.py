"""The landed event (flows/events.py) and prefect.yaml's triggers that match it.

The triggers are read as ``prefect-s3 serve`` reads them and evaluated as the Prefect server
evaluates them (its own ``EventTrigger.covers``), without a server. A few flow runs (test
harness, moto) prove that only a successful run that wrote something emits the event.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_s3_concurrency.deployments.serve import (
    PREFECT_YAML,
    SpecError,
    describe,
    load_specs,
    parse_triggers,
)
from prefect_s3_concurrency.flows import events
from prefect_s3_concurrency.flows.common import TransferSummary
from prefect_s3_concurrency.flows.events import (
    DEPLOYMENT_LABEL,
    LANDED,
    RunIdentity,
    landed_payload,
    landed_resource,
    resource_id,
)
from prefect_s3_concurrency.flows.pipeline_summary import PipelineSummary
from prefect_s3_concurrency.flows.transfer import TransferFailed, upload_directory
from prefect_s3_concurrency.s3.connection import S3Connection

ROOT = Path(__file__).resolve().parents[2]
SPECS = {s.name: s for s in load_specs(ROOT / PREFECT_YAML)}
UPLOADER = RunIdentity(str(uuid.uuid4()), "upload-directory", str(uuid.uuid4()),
                       "upload-directory/s3-upload")  # fmt: skip
SQUARER = RunIdentity(str(uuid.uuid4()), "square-objects", str(uuid.uuid4()),
                      "square-objects/s3-square")  # fmt: skip
COMMAND_LINE = RunIdentity(str(uuid.uuid4()), "upload-directory")  # no deployment


def upload(**fields: Any) -> TransferSummary:
    base = {"direction": "upload", "source": "/data/out", "destination": "s3://my-bucket/numbers",
            "objects": 3, "bytes": 30}  # fmt: skip
    return TransferSummary(**{**base, **fields})


def square(**fields: Any) -> PipelineSummary:
    base = {"source": "s3://b/in", "destination": "s3://b/out", "transform": "square"}
    return PipelineSummary(**{**base, **fields})


def received(name: str, resource: dict[str, str], run: RunIdentity | None = None) -> Any:
    """The event as the server receives it, with the related resources Prefect adds."""
    from prefect.server.events.schemas.events import ReceivedEvent

    related = []
    if run is not None:
        related.append({"prefect.resource.id": f"prefect.flow-run.{run.flow_run_id}",
                        "prefect.resource.role": "flow-run"})  # fmt: skip
    if run is not None and run.deployment_id:
        related.append({"prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                        "prefect.resource.role": "deployment"})  # fmt: skip
    return ReceivedEvent(
        occurred=dt.datetime.now(dt.UTC), event=name, resource=resource, related=related,
        id=uuid.uuid4(),
    )  # fmt: skip


def covers(deployment: str, event: Any) -> bool:
    """Whether the deployment's (only) trigger fires on ``event``, as the server decides."""
    from prefect.server.events.schemas.automations import EventTrigger

    (trigger,) = SPECS[deployment].triggers
    core = trigger.trigger_type(**trigger.model_dump())
    return EventTrigger.model_validate(core.model_dump(mode="json")).covers(event)


def landed(destination: str, run: RunIdentity) -> Any:
    return received(LANDED, landed_resource(destination, run), run)


# --- the event ------------------------------------------------------------------------------


def test_landed_event_names_the_destination_the_run_and_the_counts(tmp_path: Path) -> None:
    assert landed_payload(upload(skipped=2)) == {
        "objects": 3, "bytes": 30, "skipped": 2, "source": "/data/out", "direction": "upload",
    }  # fmt: skip
    resource = landed_resource("s3://my-bucket/numbers", UPLOADER)
    assert resource == {
        "prefect.resource.id": "s3://my-bucket/numbers",
        "prefect-s3.flow-run-id": UPLOADER.flow_run_id,
        "prefect-s3.flow-name": "upload-directory",
        "prefect-s3.deployment": "upload-directory/s3-upload",
        "prefect-s3.deployment-id": UPLOADER.deployment_id,
    }
    local = landed_resource(str(tmp_path / "a b"), COMMAND_LINE)
    assert local["prefect.resource.id"] == (tmp_path / "a b").as_uri()
    assert local["prefect-s3.path"] == str(tmp_path / "a b")
    assert local[DEPLOYMENT_LABEL] == "" and "prefect-s3.deployment-id" not in local
    assert resource_id("s3://b/p/") == "s3://b/p/"
    assert landed_payload(square(objects=4, uploaded=3, skipped=1, output_bytes=99)) == {
        "objects": 3, "bytes": 99, "skipped": 1, "source": "s3://b/in", "direction": "square",
    }  # fmt: skip


@pytest.mark.parametrize(
    "summary",
    [
        upload(failed={"k": "boom"}),
        upload(objects=0, bytes=0),  # empty source
        upload(objects=0, bytes=0, skipped=3),  # everything already current
        upload(dry_run=True),
        square(objects=2, skipped=2, resumed=2),
        square(objects=2, uploaded=1, failed={"k": "line 3: not an integer"}),
    ],
    ids=["failed", "empty", "all-skipped", "dry-run", "square-resumed", "square-failed"],
)
def test_failed_empty_or_dry_runs_land_nothing(summary: Any) -> None:
    assert landed_payload(summary) is None


# --- the triggers ---------------------------------------------------------------------------


def test_triggers_ship_disabled_and_fill_only_source() -> None:
    chained = {name: spec for name, spec in SPECS.items() if spec.triggers}
    assert set(chained) == {"s3-square", "s3-download"}
    for spec in chained.values():
        (trigger,) = spec.triggers
        assert not trigger.enabled
        assert trigger.expect == {LANDED} and trigger.posture == "Reactive"
        assert (trigger.threshold, trigger.within) == (1, dt.timedelta(0))
        assert trigger.parameters == {"source": "{{ event.resource.id }}"}
        assert "(disabled)" in describe(spec)


def test_serve_reads_the_triggers_prefect_deploy_reads() -> None:
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    doc = yaml.safe_load((ROOT / PREFECT_YAML).read_text(encoding="utf-8"))
    for entry in doc["deployments"]:
        deployed = _initialize_deployment_triggers(entry["name"], entry.get("triggers") or [])
        served = SPECS[entry["name"]].triggers
        assert [t.model_dump() for t in served] == [t.model_dump() for t in deployed]


def test_a_landed_event_starts_the_deployment_watching_its_destination() -> None:
    event = landed("s3://my-bucket/numbers", UPLOADER)
    assert covers("s3-square", event) and not covers("s3-download", event)
    assert covers("s3-square", landed("s3://my-bucket/numbers/2026", COMMAND_LINE))
    assert not covers("s3-square", landed("s3://other-bucket/numbers", UPLOADER))
    assert covers("s3-download", landed("s3://my-bucket/squares", SQUARER))


def test_a_run_never_starts_its_own_deployment() -> None:
    own = landed("s3://my-bucket/numbers-squared", SQUARER)  # matches numbers*
    assert not covers("s3-square", own)
    assert covers("s3-square", landed("s3://my-bucket/numbers-squared", UPLOADER))


def test_events_of_a_failed_run_start_nothing() -> None:
    resource = landed_resource("s3://my-bucket/numbers", UPLOADER)
    failed_run = received(
        "prefect.flow-run.Failed",
        {"prefect.resource.id": f"prefect.flow-run.{UPLOADER.flow_run_id}"}, UPLOADER,
    )  # fmt: skip
    for event in (failed_run, received("prefect-s3.objects.failed", resource, UPLOADER)):
        assert not any(covers(name, event) for name in ("s3-square", "s3-download"))


def test_parse_triggers_templates_all_but_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_BUCKET", "real-bucket")
    (trigger,) = parse_triggers(
        [{"expect": [LANDED], "match": {"prefect.resource.id": "s3://{{ $TEST_BUCKET }}/x*"},
          "parameters": {"source": "{{ event.resource.id }}", "dest": "{{ $TEST_BUCKET }}"}}],
        "dep", "here",
    )  # fmt: skip
    assert trigger.match.root == {"prefect.resource.id": "s3://real-bucket/x*"}
    assert trigger.parameters == {"source": "{{ event.resource.id }}", "dest": "{{ $TEST_BUCKET }}"}
    assert trigger.name == "dep__automation_1"
    with pytest.raises(SpecError, match=r"here\[0\]: invalid trigger: .*threshold"):
        parse_triggers([{"expect": [LANDED], "threshold": "many"}], "dep", "here")
    with pytest.raises(SpecError, match="here: 'triggers' must be a list of mappings"):
        parse_triggers({"expect": [LANDED]}, "dep", "here")


# --- flow runs ------------------------------------------------------------------------------


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(events, "emit_event", lambda **kw: calls.append(kw))
    return calls


@pytest.mark.integration
def test_only_a_successful_run_that_wrote_emits(
    moto_server: Any, bucket_factory: Any, tmp_path: Path, emitted: list[dict[str, Any]]
) -> None:
    bucket = bucket_factory(moto_server)
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    empty, bad, good = (tmp_path / n for n in ("empty", "bad", "good"))
    for d in (empty, bad, good):
        d.mkdir()
    (good / "n.txt").write_bytes(b"1\n2\n")
    (bad / "n.txt").write_bytes(b"1\n2\n")
    (bad / "link").symlink_to(bad / "n.txt")  # rejected (not followed): the run fails
    upload_directory(str(empty), f"s3://{bucket}/empty", workers=2, connection=conn)
    with pytest.raises(TransferFailed):
        upload_directory(str(bad), f"s3://{bucket}/bad", workers=2, connection=conn)
    assert emitted == []  # the failed run uploaded n.txt, and still announced nothing
    upload_directory(str(good), f"s3://{bucket}/good", workers=2, connection=conn)
    (call,) = emitted
    assert call["event"] == LANDED
    assert call["resource"]["prefect.resource.id"] == f"s3://{bucket}/good"
    assert call["resource"][DEPLOYMENT_LABEL] == ""  # run without a deployment
    assert (call["payload"]["objects"], call["payload"]["bytes"]) == (1, 4)
    assert moto_server.endpoint_url.split("//")[1] not in repr(call)  # no endpoint, no secrets
