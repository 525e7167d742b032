"""Unit tests for deployments.serve: reading prefect.yaml into deployment specs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from prefect_s3_concurrency.deployments.serve import (
    DeploymentSpec,
    SpecError,
    describe,
    load_specs,
    main,
    parse_deployment,
    parse_schedule,
)

YAML = """
definitions:
  pool: &pool {name: p, work_queue_name: default}
  schedules:
    nightly: &nightly {cron: "0 3 * * 1-5", timezone: America/New_York, active: false}
    quarter: &quarter {interval: 900}
deployments:
  - name: a
    entrypoint: flows/transfer.py:download_prefix
    description: first
    tags: [x, y]
    version: 2
    work_pool: *pool
    parameters: {source: "s3://b/{{ $TEST_PREFIX }}", dest_dir: out, workers: 4}
    schedules: [*nightly, {<<: *quarter, active: false, slug: q, parameters: {workers: 2}}]
  - name: b
    entrypoint: flows/transfer.py:upload_directory
    parameters: {source_dir: in, dest: "s3://b/{{ $UNSET_FOR_TEST }}"}
"""


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "prefect.yaml"
    path.write_text(YAML, encoding="utf-8")
    return path


def test_load_specs_reads_every_field(yaml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PREFIX", "raw")
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    a, b = load_specs(yaml_file)
    assert (a.name, a.entrypoint, a.description, a.tags, a.version, a.work_pool) == (
        "a", "flows/transfer.py:download_prefix", "first", ["x", "y"], "2", "p",
    )  # fmt: skip
    assert a.parameters == {"source": "s3://b/raw", "dest_dir": "out", "workers": 4}
    cron, interval = a.schedules
    assert (cron.cron, cron.timezone, cron.active, cron.interval) == (
        "0 3 * * 1-5", "America/New_York", False, None,
    )  # fmt: skip
    assert interval.interval == dt.timedelta(minutes=15)
    assert (interval.active, interval.slug, interval.parameters) == (False, "q", {"workers": 2})
    assert b.schedules == [] and b.description is None and b.tags == []
    assert b.parameters["dest"] == "s3://b/{{ $UNSET_FOR_TEST }}"  # unset: left as written


def test_load_specs_filters_by_name(yaml_file: Path) -> None:
    assert [s.name for s in load_specs(yaml_file, ["b"])] == ["b"]
    assert [s.name for s in load_specs(yaml_file, ["upload-directory/b"])] == ["b"]
    with pytest.raises(SpecError, match=r"no deployment named \['zzz'\]"):
        load_specs(yaml_file, ["zzz"])


def test_load_specs_rejects_duplicates_and_bad_files(tmp_path: Path) -> None:
    dup = tmp_path / "dup.yaml"
    dup.write_text("deployments: [{name: a, entrypoint: x.py:f}, {name: a, entrypoint: y.py:g}]")
    with pytest.raises(SpecError, match="names repeat"):
        load_specs(dup)
    with pytest.raises(SpecError, match="cannot read"):
        load_specs(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: {a: 1}\n")
    with pytest.raises(SpecError, match="must be a list"):
        load_specs(bad)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"cron": "* * * * *", "interval": 60}, "exactly one of cron, interval or rrule"),
        ({"timezone": "UTC"}, "exactly one of cron, interval or rrule"),
        ({"interval": 60, "actve": False}, r"unknown schedule key\(s\) \['actve'\]"),
        ({"interval": -5}, "interval must be positive"),
        ("0 * * * *", "must be a mapping"),
    ],
)
def test_parse_schedule_rejects(config: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_schedule(config, "here")  # type: ignore[arg-type]


def test_parse_schedule_interval_forms_and_anchor() -> None:
    iso = parse_schedule({"interval": "PT15M", "anchor_date": "2030-01-01T00:00:00Z"}, "x")
    assert iso.interval == dt.timedelta(minutes=15)
    assert iso.anchor_date == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    schedule = iso.to_schedule()
    assert schedule.interval == dt.timedelta(minutes=15)
    assert schedule.anchor_date == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert parse_schedule({"interval": 2.5}, "x").interval == dt.timedelta(seconds=2.5)
    rrule = parse_schedule({"rrule": "FREQ=DAILY;INTERVAL=1", "timezone": "UTC"}, "x")
    assert rrule.to_schedule().rrule == "FREQ=DAILY;INTERVAL=1"


def test_to_schedule_keeps_active_parameters_and_slug() -> None:
    spec = parse_schedule(
        {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "active": False,
         "parameters": {"workers": 3}, "slug": "nightly", "day_or": False}, "x",
    )  # fmt: skip
    schedule = spec.to_schedule()
    assert (schedule.cron, schedule.timezone, schedule.active, schedule.day_or) == (
        "0 2 * * *", "Europe/Berlin", False, False,
    )  # fmt: skip
    assert (schedule.parameters, schedule.slug) == ({"workers": 3}, "nightly")


def test_parse_deployment_requires_name_and_entrypoint() -> None:
    with pytest.raises(SpecError, match=r"deployments\[3\]: both 'name' and 'entrypoint'"):
        parse_deployment({"name": "x"}, 3)


def test_describe_lists_schedules() -> None:
    spec = DeploymentSpec(
        name="d", entrypoint="f.py:g",
        schedules=[parse_schedule({"cron": "0 1 * * *", "timezone": "UTC", "active": False}, "")],
    )  # fmt: skip
    assert "0 1 * * * UTC (inactive)" in describe(spec)
    assert "no schedule" in describe(DeploymentSpec(name="e", entrypoint="f.py:g"))


def test_main_list_prints_and_does_not_serve(
    yaml_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--prefect-file", str(yaml_file), "--list"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["a", "b"]
    with pytest.raises(SystemExit, match="error: .*no deployment named"):
        main(["--prefect-file", str(yaml_file), "--list", "--name", "nope"])
