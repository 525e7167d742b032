"""prefect.yaml and deployments.serve, checked on their own and against a real Prefect server.

The server tests start ``prefect server start`` on a free 127.0.0.1 port (own PREFECT_HOME),
then ``prefect deploy --all --no-prompt``, a process worker, and ``prefect-s3 serve``
in subprocesses, exactly as a user would run them.
"""

from __future__ import annotations

import copy
import datetime as dt
import inspect
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flows import load_flow_from_entrypoint
from prefect_processes import (
    BIN,
    REPO,
    ManagedProcess,
    PrefectServer,
    serve_deployments,
    wait_for,
    wait_for_deployment,
    wait_for_final_state,
)

from prefect_s3_concurrency.deployments.serve import PREFECT_YAML, load_specs

ROOT = Path(__file__).resolve().parents[2]
DOC = yaml.safe_load((ROOT / PREFECT_YAML).read_text(encoding="utf-8"))
DEPLOYMENTS: list[dict[str, Any]] = DOC["deployments"]
NAMES = [d["name"] for d in DEPLOYMENTS]
TIMINGS: dict[str, float] = {}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def flow_of(entry: dict[str, Any]) -> Any:
    """Load the flow a prefect.yaml deployment points at."""
    return load_flow_from_entrypoint(str(REPO / entry["entrypoint"]))


def by_name(name: str) -> dict[str, Any]:
    return next(d for d in DEPLOYMENTS if d["name"] == name)


def with_schedule(kind: str) -> dict[str, Any]:
    """The first deployment with a schedule of ``kind`` (cron or interval)."""
    return next(d for d in DEPLOYMENTS if any(kind in s for s in d.get("schedules") or []))


def schedule_key(schedule: Any) -> tuple[Any, ...]:
    """Comparable form of a cron or interval schedule (client schema or prefect.yaml dict)."""
    get = schedule.get if isinstance(schedule, dict) else lambda k: getattr(schedule, k, None)
    interval = get("interval")
    if isinstance(interval, int | float):
        interval = dt.timedelta(seconds=interval)
    return get("cron"), interval, get("timezone") or "UTC"


# --- prefect.yaml on its own ---------------------------------------------------------------


def test_prefect_yaml_shares_pool_and_schedules_through_anchors() -> None:
    definitions = DOC["definitions"]
    pools = list(definitions["work_pools"].values())
    schedules = list(definitions["schedules"].values())
    assert {"cron", "timezone"} <= set(definitions["schedules"]["nightly"])
    assert "interval" in definitions["schedules"]["hourly"]
    for entry in DEPLOYMENTS:
        assert any(entry["work_pool"] is pool for pool in pools), entry["name"]  # an alias
        for schedule in entry.get("schedules") or []:
            assert any(schedule_key(schedule) == schedule_key(s) for s in schedules)
    pull = DOC["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert pull == {"directory": "{{ $PWD }}"}


def test_prefect_yaml_shows_cron_and_interval_and_ships_them_inactive() -> None:
    kinds = {k for d in DEPLOYMENTS for s in d.get("schedules") or [] for k in s}
    assert {"cron", "interval", "timezone"} <= kinds
    for entry in DEPLOYMENTS:
        placeholder = any("my-bucket" in str(v) for v in entry["parameters"].values())
        for schedule in entry.get("schedules") or []:
            assert not (placeholder and schedule.get("active", True)), entry["name"]


def test_makefile_targets_use_the_pool_and_flags_of_prefect_yaml() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    pools = {d["work_pool"]["name"] for d in DEPLOYMENTS}
    assert pools == {re.search(r"^POOL\s*\?=\s*(\S+)", makefile, re.M).group(1)}
    assert "prefect deploy --all --no-prompt" in makefile and "--type process" in makefile
    assert "$(BIN)/prefect-s3 serve" in makefile


@pytest.mark.parametrize("name", NAMES)
def test_entrypoint_loads_and_parameters_fit_the_flow(name: str) -> None:
    entry = by_name(name)
    flow_obj = flow_of(entry)
    signature = inspect.signature(flow_obj.fn).parameters
    assert entry["description"] and entry["tags"]
    for params in [entry["parameters"]] + [s.get("parameters", {}) for s in entry["schedules"]]:
        unknown = set(params) - set(signature)
        assert not unknown, f"{name}: {unknown} are not parameters of {flow_obj.name}"
    required = {p for p, v in signature.items() if v.default is inspect.Parameter.empty}
    assert required <= set(entry["parameters"]), f"{name}: a scheduled run would lack {required}"
    flow_obj.validate_parameters(entry["parameters"])  # types and constraints, as a run would


def test_serve_specs_agree_with_prefect_deploy() -> None:
    """deployments.serve must build the very schedules `prefect deploy` builds from the file."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    specs = load_specs(ROOT / PREFECT_YAML)
    assert [s.name for s in specs] == NAMES
    for spec, entry in zip(specs, DEPLOYMENTS, strict=True):
        assert (spec.entrypoint, spec.description, spec.tags, spec.parameters) == (
            entry["entrypoint"], entry["description"], entry["tags"], entry["parameters"],
        )  # fmt: skip
        assert spec.work_pool == entry["work_pool"]["name"]
        assert len(spec.schedules) == len(entry["schedules"])
        for ours, raw in zip(spec.schedules, entry["schedules"], strict=True):
            served = DeploymentScheduleCreate.from_schedule(ours.to_schedule())
            deployed = _schedule_config_to_deployment_schedule(raw)
            assert schedule_key(served.schedule) == schedule_key(deployed["schedule"])
            assert served.active == deployed.get("active", True)
            assert served.parameters == deployed.get("parameters", {})
            assert served.slug == deployed.get("slug")


# --- against a real Prefect server ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    TIMINGS["server start-up s"] = prefect_server.startup_seconds
    yield prefect_server
    ARTIFACTS.mkdir(exist_ok=True)
    report = {k: round(v, 2) for k, v in TIMINGS.items()}
    (ARTIFACTS / "deployment-timings.json").write_text(json.dumps(report, indent=2))
    print(f"\ndeployment timings: {report}")


@pytest.fixture(scope="module")
def deployed(server: PrefectServer) -> dict[str, Any]:
    """``prefect work-pool create ... --type process`` + ``prefect deploy --all --no-prompt``."""
    for pool in {d["work_pool"]["name"] for d in DEPLOYMENTS}:
        server.run_cli(["work-pool", "create", pool, "--type", "process", "--overwrite"])
    start = time.monotonic()
    server.run_cli(["deploy", "--all", "--no-prompt"])
    TIMINGS["prefect deploy --all s"] = time.monotonic() - start
    with server.client() as client:
        return {
            d["name"]: client.read_deployment_by_name(f"{flow_of(d).name}/{d['name']}")
            for d in DEPLOYMENTS
        }


def runs_of(server: PrefectServer, deployment_id: Any, state: StateType | None = None) -> list:
    state_filter = (
        FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])))
        if state
        else None
    )
    with server.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=state_filter,
        )


def test_deploy_all_registers_every_deployment_as_written(
    server: PrefectServer, deployed: dict[str, Any]
) -> None:
    with server.client() as client:
        for entry in DEPLOYMENTS:
            dep = deployed[entry["name"]]
            pool = client.read_work_pool(dep.work_pool_name)
            assert (pool.name, pool.type) == (entry["work_pool"]["name"], "process")
            assert (dep.description, sorted(dep.tags), dep.parameters) == (
                entry["description"], sorted(entry["tags"]), entry["parameters"],
            )  # fmt: skip
            assert dep.enforce_parameter_schema
            assert dep.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
            ]
            got = sorted((schedule_key(s.schedule), s.active) for s in dep.schedules)
            want = sorted((schedule_key(s), s.get("active", True)) for s in entry["schedules"])
            assert got == want


def test_deploy_all_registers_the_triggers_disabled(
    server: PrefectServer, deployed: dict[str, Any]
) -> None:
    with server.client() as client:
        automations = client.read_automations()
    for entry in DEPLOYMENTS:
        dep = deployed[entry["name"]]
        mine = [a for a in automations if any(
            getattr(x, "deployment_id", None) == dep.id for x in a.actions)]  # fmt: skip
        assert sorted(a.name for a in mine) == sorted(t["name"] for t in entry.get("triggers", []))
        assert not any(a.enabled for a in mine)  # shipped disabled, like the schedules


def test_active_interval_schedule_creates_scheduled_runs(
    server: PrefectServer, deployed: dict[str, Any]
) -> None:
    entry = with_schedule("interval")
    dep = deployed[entry["name"]]
    schedule = next(s for s in dep.schedules if getattr(s.schedule, "interval", None))
    assert runs_of(server, dep.id) == []  # shipped inactive: nothing scheduled
    with server.client() as client:
        client.update_deployment_schedule(dep.id, schedule.id, active=True)
    runs = wait_for(
        lambda: runs_of(server, dep.id, StateType.SCHEDULED), 60, "scheduled runs to appear"
    )
    starts = sorted(r.expected_start_time for r in runs)
    step = schedule.schedule.interval.total_seconds()
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert all(gap % step == 0 for gap in gaps)
    assert all(r.parameters == entry["parameters"] for r in runs)
    cron_only = with_schedule("cron")
    if cron_only["name"] != entry["name"]:  # the scheduler has run a pass over it too
        assert runs_of(server, deployed[cron_only["name"]].id) == []


def _takes_s3_url(prop: dict[str, Any]) -> bool:
    options = [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]
    return any(o.get("pattern", "").startswith("^s3://") for o in options)


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_rejected_and_no_run_executes(
    server: PrefectServer, deployed: dict[str, Any], name: str
) -> None:
    dep = deployed[name]
    props = dep.parameter_openapi_schema["properties"]
    s3_params = [p for p, s in props.items() if _takes_s3_url(s)]
    assert s3_params and "workers" in props
    before = len(runs_of(server, dep.id))
    cases = [({"workers": 0}, "workers", "0 is less than the minimum of 1")]
    # an s3:// URL or an S3Bucket block: a bad URL matches neither
    cases += [
        ({p: "bucket/prefix"}, p, "'bucket/prefix' is not valid under any of the given schemas")
        for p in s3_params
    ]
    with server.client() as client:
        for params, field, reason in cases:
            with pytest.raises(PrefectHTTPStatusError) as info:
                client.create_flow_run_from_deployment(dep.id, parameters=params)
            detail = info.value.response.json()["detail"]
            assert info.value.response.status_code == 409
            assert f"Validation failed for field '{field}'" in detail and reason in detail
    assert len(runs_of(server, dep.id)) == before


@pytest.mark.integration
def test_process_worker_executes_a_deployed_run(
    server: PrefectServer, deployed: dict[str, Any], rclone_s3: Any, tmp_path: Path
) -> None:
    name = next(d["name"] for d in DEPLOYMENTS if "upload_directory" in d["entrypoint"])
    entry = by_name(name)
    source = tmp_path / "outgoing"
    for i in range(5):
        (source / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 2}" / f"f{i}.txt").write_text(f"payload {i}\n" * (i + 1))
    bucket = rclone_s3.create_bucket(f"worker-{time.time_ns() % 10**9}")
    params = {"source_dir": str(source), "dest": f"s3://{bucket}/from-worker", "workers": 4}
    with server.client() as client:
        run = client.create_flow_run_from_deployment(deployed[name].id, parameters=params)
    worker_dir = tmp_path / "elsewhere"  # the pull step must move the run to the repo
    worker_dir.mkdir()
    start = time.monotonic()
    worker = ManagedProcess(
        [str(BIN / "prefect"), "worker", "start", "--pool", entry["work_pool"]["name"],
         "--run-once"],
        server.env(rclone_s3.env()), tmp_path / "worker.log", cwd=worker_dir,
    )  # fmt: skip
    try:
        worker.wait(timeout=180)
        final = wait_for_final_state(server, run.id, timeout=30)
    finally:
        worker.stop()
    TIMINGS["worker run (start worker to Completed) s"] = time.monotonic() - start
    assert final.state.is_completed(), f"{final.state}\n{worker.log_tail()}"
    listing = rclone_s3.client().list_objects_v2(Bucket=bucket, Prefix="from-worker/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    assert keys == sorted(f"from-worker/d{i % 2}/f{i}.txt" for i in range(5))


def test_serve_registers_prefect_yaml_deployments_and_schedules(
    server: PrefectServer, tmp_path: Path
) -> None:
    """Serve a copy of prefect.yaml (renamed, interval schedule switched on for the future)."""
    doc = copy.deepcopy({"deployments": DEPLOYMENTS})
    anchor = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, minutes=30)  # runs: now + 30 min + k h
    for entry in doc["deployments"]:
        entry["name"] += "-served"
        # entrypoints resolve from the file's directory, as `prefect deploy` resolves them
        entry["entrypoint"] = str(REPO / entry["entrypoint"])
        for schedule in entry["schedules"]:
            if "interval" in schedule:
                schedule.update(active=True, anchor_date=anchor.isoformat())
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    (tmp_path / "flows").symlink_to(REPO / "flows")  # entrypoints resolve beside prefect.yaml
    serving = serve_deployments(server, ["--prefect-file", str(path)], tmp_path / "serve.log")
    try:
        registered = {
            e["name"]: wait_for_deployment(server, f"{flow_of(e).name}/{e['name']}", serving)
            for e in doc["deployments"]
        }
        TIMINGS["serve registration (all deployments) s"] = time.monotonic() - serving.started
        for entry in doc["deployments"]:
            dep = registered[entry["name"]]
            assert dep.work_pool_name is None and dep.parameters == entry["parameters"]
            got = sorted((schedule_key(s.schedule), s.active) for s in dep.schedules)
            want = sorted((schedule_key(s), s["active"]) for s in entry["schedules"])
            assert got == want
        served = registered[with_schedule("interval")["name"] + "-served"]
        runs = wait_for(
            lambda: runs_of(server, served.id, StateType.SCHEDULED), 60, "served schedule's runs"
        )
        step = served.schedules[0].schedule.interval.total_seconds()
        for run in runs:  # aligned on the anchor from the file, and none due yet
            assert (anchor - run.expected_start_time).total_seconds() % step == 0
            assert run.expected_start_time > dt.datetime.now(dt.UTC)
    finally:
        serving.stop()
