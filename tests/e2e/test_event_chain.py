"""prefect.yaml's chained deployments on a real Prefect server: events out, triggers in.

``prefect-s3 serve`` serves a copy of prefect.yaml's s3-upload -> s3-square -> s3-download
chain (renamed, on a test bucket, triggers switched on). One run of s3-upload must start
exactly one s3-square run, with ``source`` from the event and everything else its own, which
must start exactly one s3-download run. s3-square writes under ``numbers-squared``, which its
own trigger (``numbers*``) matches: only its self-exclusion keeps it from starting itself.
Serving the file a second time must leave one automation per trigger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.events.filters import EventFilter, EventNameFilter
from prefect_processes import (
    REPO,
    ManagedProcess,
    PrefectServer,
    serve_deployments,
    wait_for,
    wait_for_deployment,
    wait_for_final_state,
)

from prefect_s3_concurrency.deployments.serve import PREFECT_YAML
from prefect_s3_concurrency.flows.events import LANDED

DOC = yaml.safe_load((REPO / PREFECT_YAML).read_text(encoding="utf-8"))
CHAIN = ("s3-upload", "s3-square", "s3-download")
FLOWS = {"s3-upload": "upload-directory", "s3-square": "square-objects",
         "s3-download": "download-prefix"}  # fmt: skip
SUFFIX = "-chained"
INPUTS = {"a.txt": b"1\n-2\n3\n", "sub/b.txt": b"12\n+7\n"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def squared(body: bytes) -> bytes:
    return b"".join(b"%d\n" % (int(line) ** 2) for line in body.splitlines())


def chained_yaml(bucket: str, tmp_path: Path) -> dict[str, Any]:
    """prefect.yaml's chain, renamed, on ``bucket``, triggers enabled, squares beside numbers."""
    text = yaml.safe_dump({"deployments": [d for d in DOC["deployments"] if d["name"] in CHAIN]})
    for name in CHAIN:  # names, and the self-exclusions that quote them
        text = text.replace(f"/{name}", f"/{name}{SUFFIX}").replace(
            f"name: {name}\n", f"name: {name}{SUFFIX}\n"
        )
    # squares land under numbers-squared, which s3-square's own trigger (numbers*) matches
    text = text.replace("s3://my-bucket/squares", "s3://my-bucket/numbers-squared")
    doc = yaml.safe_load(text.replace("my-bucket", bucket))
    for entry in doc["deployments"]:
        entry["entrypoint"] = str(REPO / entry["entrypoint"])
        for trigger in entry.get("triggers") or []:
            trigger["enabled"] = True
    params = {d["name"]: d["parameters"] for d in doc["deployments"]}
    params[f"s3-upload{SUFFIX}"]["source_dir"] = str(tmp_path / "numbers")
    params[f"s3-download{SUFFIX}"]["dest_dir"] = str(tmp_path / "fetched")
    return doc


@pytest.fixture(scope="module")
def chain(
    prefect_server: PrefectServer, rclone_s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Serve the chain; yield its deployments, file and environment."""
    tmp_path = tmp_path_factory.mktemp("chain")
    bucket = rclone_s3.create_bucket(f"chain-{time.time_ns() % 10**9}")
    for key, body in INPUTS.items():
        (tmp_path / "numbers" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "numbers" / key).write_bytes(body)
    doc = chained_yaml(bucket, tmp_path)
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    serving = serve_deployments(
        prefect_server, ["--prefect-file", str(path)], tmp_path / "serve.log", rclone_s3.env()
    )
    try:
        deployments = {
            name: wait_for_deployment(
                prefect_server, f"{FLOWS[name]}/{name}{SUFFIX}", serving, timeout=120
            )
            for name in CHAIN
        }
        served_up(serving)
        yield {"deployments": deployments, "doc": doc, "path": path, "bucket": bucket,
               "tmp": tmp_path, "s3": rclone_s3}  # fmt: skip
    finally:
        serving.stop()


def served_up(process: ManagedProcess, times: int = 1) -> None:
    """Wait until ``prefect-s3 serve`` has registered everything (triggers come first)."""

    def probe() -> bool:
        process.assert_alive()
        return process.log_tail(10**6).count("are being served") >= times

    wait_for(probe, 120, "serve to register its deployments and triggers")


def runs_of(server: PrefectServer, deployment_id: Any) -> list[Any]:
    with server.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def only_run(server: PrefectServer, deployment_id: Any, what: str) -> Any:
    """Wait for the deployment's first run, then for it to finish; return it."""
    (run, *others) = wait_for(lambda: runs_of(server, deployment_id), 120, f"{what} to start")
    assert others == [], f"{what} started {1 + len(others)} times"
    return wait_for_final_state(server, run.id, timeout=120)


def automations_running(server: PrefectServer, deployment_id: Any) -> list[Any]:
    """The automations whose action runs this deployment."""
    with server.client() as client:
        return [
            a
            for a in client.read_automations()
            if any(getattr(x, "deployment_id", None) == deployment_id for x in a.actions)
        ]


def landed_events(server: PrefectServer, chain: dict[str, Any], at_least: int) -> list[Any]:
    """The chain's landed events, once there are ``at_least`` of them."""
    with server.client() as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[LANDED])), 50)
    marks = (f"s3://{chain['bucket']}/", chain["tmp"].as_uri())
    events = [e for e in page.events if e.resource.id.startswith(marks)]
    return events if len(events) >= at_least else []


def test_upstream_run_starts_the_chain_once_with_source_from_the_event(
    prefect_server: PrefectServer, chain: dict[str, Any]
) -> None:
    deps, bucket, s3 = chain["deployments"], chain["bucket"], chain["s3"]
    up_dep, square_dep, down_dep = (deps[n] for n in CHAIN)
    assert [runs_of(prefect_server, d.id) for d in (square_dep, down_dep)] == [[], []]
    with prefect_server.client() as client:
        up = client.create_flow_run_from_deployment(up_dep.id)
    up = wait_for_final_state(prefect_server, up.id, timeout=120)
    assert up.state.is_completed(), up.state
    square = only_run(prefect_server, square_dep.id, "s3-square")
    assert square.state.is_completed(), square.state
    # only source comes from the event (the upload's destination); the rest is the deployment's
    assert square.parameters == {**square_dep.parameters, "source": f"s3://{bucket}/numbers"}
    assert square.parameters["dest"] == f"s3://{bucket}/numbers-squared"
    down = only_run(prefect_server, down_dep.id, "s3-download")
    assert down.state.is_completed(), down.state
    assert down.parameters == {**down_dep.parameters, "source": f"s3://{bucket}/numbers-squared"}
    # s3-download's run came from s3-square's event, so the triggers have seen that event,
    # which s3-square's own trigger matches but for the self-exclusion: still one run each
    for dep in (up_dep, square_dep, down_dep):
        assert len(runs_of(prefect_server, dep.id)) == 1
    fetched = Path(down_dep.parameters["dest_dir"])
    got = {p.relative_to(fetched).as_posix(): p.read_bytes() for p in fetched.rglob("*.txt")}
    assert got == {k: squared(v) for k, v in INPUTS.items()}
    listing = s3.client().list_objects_v2(Bucket=bucket, Prefix="numbers-squared/")
    assert sorted(o["Key"] for o in listing["Contents"]) == sorted(
        f"numbers-squared/{k}" for k in INPUTS
    )
    # one landed event per run (sent asynchronously: wait until the last one is stored)
    events = wait_for(lambda: landed_events(prefect_server, chain, 3), 60, "3 landed events")
    assert sorted(e.resource["prefect-s3.flow-run-id"] for e in events) == sorted(
        str(r.id) for r in (up, square, down)
    )
    latency = {  # created: the automation has acted; started: the served run is Running
        "upload completed -> square created s": (square.created - up.end_time),
        "upload completed -> square started s": (square.start_time - up.end_time),
        "square completed -> download created s": (down.created - square.end_time),
        "square completed -> download started s": (down.start_time - square.end_time),
    }
    report = {k: round(v.total_seconds(), 2) for k, v in latency.items()}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "event-chain-latency.json").write_text(json.dumps(report, indent=2))
    print(f"\nevent chain latency: {report}")


def test_serving_twice_leaves_one_automation_per_trigger(
    prefect_server: PrefectServer, chain: dict[str, Any]
) -> None:
    doc, deps = chain["doc"], chain["deployments"]
    again = serve_deployments(
        prefect_server, ["--prefect-file", str(chain["path"])], chain["tmp"] / "serve2.log"
    )
    try:
        served_up(again)
        for entry in doc["deployments"]:
            dep = deps[entry["name"].removesuffix(SUFFIX)]
            automations = automations_running(prefect_server, dep.id)
            triggers = entry.get("triggers") or []
            assert sorted(a.name for a in automations) == sorted(t["name"] for t in triggers)
            for automation in automations:
                assert automation.enabled
                assert automation.trigger.within.total_seconds() == 0
                assert automation.trigger.threshold == 1
                (action,) = automation.actions
                assert action.parameters == {"source": "{{ event.resource.id }}"}
        assert sum(len(e.get("triggers") or []) for e in doc["deployments"]) == 2
    finally:
        again.stop()
