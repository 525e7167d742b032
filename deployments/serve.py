"""Serve every deployment of ``prefect.yaml`` from this process, without a work pool.

``prefect-s3 serve`` reads the same ``prefect.yaml`` that ``prefect deploy`` reads, so names,
descriptions, tags, parameters, schedules and triggers are written once. Like ``prefect deploy``, it
looks for ``prefect.yaml`` in the current directory (or takes ``--prefect-file``); entrypoints
and relative paths resolve from that file's directory. The ``work_pool`` and ``pull``
sections are ignored here: served runs execute as subprocesses of this process.

Examples::

    PREFECT_API_URL=http://127.0.0.1:4200/api prefect-s3 serve
    prefect-s3 serve --name s3-upload --list
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from prefect_s3_concurrency.errors import S3PipelineError

PREFECT_YAML = "prefect.yaml"  # looked up in the current directory, as `prefect deploy` does
SCHEDULE_KEYS = frozenset(
    {"cron", "interval", "rrule", "timezone", "anchor_date", "day_or", "active", "parameters",
     "slug"}
)  # fmt: skip


class SpecError(S3PipelineError, ValueError):
    """prefect.yaml cannot be turned into deployments; the message says where and why."""


@dataclass
class ScheduleSpec:
    """One schedule of a deployment, exactly as prefect.yaml states it."""

    cron: str | None = None
    interval: dt.timedelta | None = None
    rrule: str | None = None
    timezone: str | None = None
    anchor_date: dt.datetime | None = None
    day_or: bool = True
    active: bool = True
    parameters: dict[str, Any] = field(default_factory=dict)
    slug: str | None = None

    def to_schedule(self) -> Any:
        """Return the equivalent :class:`prefect.schedules.Schedule`."""
        from prefect.schedules import Cron, Interval, RRule

        common: dict[str, Any] = {
            "active": self.active, "parameters": dict(self.parameters), "slug": self.slug,
        }  # fmt: skip
        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone, day_or=self.day_or, **common)
        if self.interval is not None:
            return Interval(
                self.interval, anchor_date=self.anchor_date, timezone=self.timezone, **common
            )
        return RRule(str(self.rrule), timezone=self.timezone, **common)


@dataclass
class DeploymentSpec:
    """What prefect.yaml says about one deployment (the parts that serving uses)."""

    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    version: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    concurrency_limit: int | None = None
    paused: bool = False
    enforce_parameter_schema: bool = True
    work_pool: str | None = None
    triggers: list[Any] = field(default_factory=list)  # DeploymentTriggerTypes, validated


def parse_schedule(config: dict[str, Any], where: str) -> ScheduleSpec:
    """Turn one ``schedules:`` entry into a :class:`ScheduleSpec`.

    Args:
        config: The mapping from prefect.yaml (anchors already merged by the YAML loader).
        where: Where it came from, for error messages.

    Raises:
        SpecError: On an unknown key, or not exactly one of cron, interval and rrule.
    """
    if not isinstance(config, dict):
        raise SpecError(f"{where}: a schedule must be a mapping, got {config!r}")
    unknown = set(config) - SCHEDULE_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown schedule key(s) {sorted(unknown)}")
    kinds = [k for k in ("cron", "interval", "rrule") if config.get(k) is not None]
    if len(kinds) != 1:
        raise SpecError(f"{where}: give exactly one of cron, interval or rrule, got {kinds}")
    spec = ScheduleSpec(
        cron=config.get("cron"),
        rrule=config.get("rrule"),
        timezone=config.get("timezone"),
        day_or=bool(config.get("day_or", True)),
        active=bool(config.get("active", True)),
        parameters=dict(config.get("parameters") or {}),
        slug=config.get("slug"),
    )
    if "interval" in kinds:
        interval = config["interval"]
        seconds = isinstance(interval, int | float) and not isinstance(interval, bool)
        spec.interval = (
            dt.timedelta(seconds=interval)
            if seconds
            else TypeAdapter(dt.timedelta).validate_python(interval)
        )
        if spec.interval <= dt.timedelta(0):
            raise SpecError(f"{where}: interval must be positive, got {interval!r}")
    if config.get("anchor_date") is not None:
        spec.anchor_date = TypeAdapter(dt.datetime).validate_python(config["anchor_date"])
    return spec


def parse_triggers(configs: Any, deployment_name: str, where: str) -> list[Any]:
    """Validate a deployment's ``triggers:`` as ``prefect deploy`` does.

    As there, ``{{ $ENV_VAR }}`` placeholders are filled in every field but ``parameters``,
    whose ``{{ event.* }}`` templates are the server's to render, and an unnamed trigger is
    named ``<deployment>__automation_<n>``.

    Args:
        configs: The ``triggers:`` list from prefect.yaml (anchors already merged).
        deployment_name: The deployment's name, for default automation names.
        where: Where it came from, for error messages.

    Raises:
        SpecError: If it is not a list of mappings, or a trigger is invalid.
    """
    from prefect.events import DeploymentTriggerTypes
    from prefect.utilities.templating import apply_values
    from pydantic import ValidationError

    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SpecError(f"{where}: 'triggers' must be a list of mappings")
    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    triggers = []
    for i, config in enumerate(configs, start=1):
        rest = {k: v for k, v in config.items() if k != "parameters"}
        templated = apply_values(rest, {}, remove_notset=False)
        spec: dict[str, Any] = dict(templated) if isinstance(templated, dict) else {}
        if "parameters" in config:
            spec["parameters"] = config["parameters"]
        spec.setdefault("name", f"{deployment_name}__automation_{i}")
        try:
            triggers.append(adapter.validate_python(spec))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise SpecError(f"{where}[{i - 1}]: invalid trigger: {problems}") from None
    return triggers


def parse_deployment(config: dict[str, Any], index: int) -> DeploymentSpec:
    """Turn one ``deployments:`` entry into a :class:`DeploymentSpec`.

    Raises:
        SpecError: If the name or entrypoint is missing, or a schedule is invalid.
    """
    name = config.get("name")
    if not name or not config.get("entrypoint"):
        raise SpecError(f"deployments[{index}]: both 'name' and 'entrypoint' are required")
    schedules = config.get("schedules") or []
    return DeploymentSpec(
        name=str(name),
        entrypoint=str(config["entrypoint"]),
        description=config.get("description"),
        tags=[str(t) for t in config.get("tags") or []],
        version=None if config.get("version") is None else str(config["version"]),
        parameters=dict(config.get("parameters") or {}),
        schedules=[
            parse_schedule(s, f"deployment {name!r} schedules[{i}]")
            for i, s in enumerate(schedules)
        ],
        concurrency_limit=config.get("concurrency_limit"),
        paused=bool(config.get("paused", False)),
        enforce_parameter_schema=bool(config.get("enforce_parameter_schema", True)),
        work_pool=(config.get("work_pool") or {}).get("name"),
        triggers=parse_triggers(
            config.get("triggers") or [], str(name), f"deployment {name!r} triggers"
        ),
    )


def load_specs(
    path: str | os.PathLike[str] = PREFECT_YAML,
    names: Iterable[str] | None = None,
) -> list[DeploymentSpec]:
    """Read prefect.yaml into deployment specs, as ``prefect deploy`` would read it.

    ``{{ $ENV_VAR }}`` placeholders are filled from the environment, as ``prefect deploy``
    fills them; unset ones are left as written.

    Args:
        path: The prefect.yaml file.
        names: Keep only these deployment names (``name`` or ``flow-name/name``); all if None.

    Raises:
        SpecError: If the file is malformed, names repeat, or a requested name is missing.
    """
    from prefect.utilities.templating import apply_values

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read {path}: {exc}") from None
    entries = document.get("deployments") or []
    if not isinstance(entries, list):
        raise SpecError(f"{path}: 'deployments' must be a list")
    # Triggers keep their parameters' {{ event.* }} templates: parse_triggers fills the rest.
    triggers = [e.pop("triggers", None) if isinstance(e, dict) else None for e in entries]
    entries = apply_values(entries, {}, remove_notset=False)  # fills {{ $VAR }} from os.environ
    assert isinstance(entries, list)
    for entry, trigger_list in zip(entries, triggers, strict=True):
        if trigger_list is not None and isinstance(entry, dict):
            entry["triggers"] = trigger_list
    specs = [parse_deployment(entry, i) for i, entry in enumerate(entries)]
    seen = [s.name for s in specs]
    if len(seen) != len(set(seen)):
        raise SpecError(f"{path}: deployment names repeat: {seen}")
    if names is None:
        return specs
    wanted = {n.split("/", 1)[-1] for n in names}
    missing = wanted - set(seen)
    if missing:
        raise SpecError(f"{path}: no deployment named {sorted(missing)} (have {seen})")
    return [s for s in specs if s.name in wanted]


def build_deployments(specs: Sequence[DeploymentSpec], project_dir: Path) -> list[Any]:
    """Load each spec's flow and return ``flow.to_deployment(...)`` objects for ``serve``.

    Args:
        specs: The deployments to build.
        project_dir: The directory of prefect.yaml; relative entrypoints start there.
    """
    from prefect.flows import load_flow_from_entrypoint

    deployments = []
    for spec in specs:
        path, _, func = spec.entrypoint.partition(":")
        flow_obj: Any = load_flow_from_entrypoint(f"{project_dir / path}:{func}")
        deployments.append(
            flow_obj.to_deployment(
                name=spec.name,
                description=spec.description,
                tags=spec.tags,
                version=spec.version,
                parameters=spec.parameters,
                schedules=[s.to_schedule() for s in spec.schedules],
                concurrency_limit=spec.concurrency_limit,
                paused=spec.paused,
                enforce_parameter_schema=spec.enforce_parameter_schema,
                triggers=spec.triggers,
            )
        )
    return deployments


def describe(spec: DeploymentSpec) -> str:
    """One line per deployment: name, entrypoint, schedules and triggers."""
    parts = []
    for s in spec.schedules:
        what = s.cron or s.rrule or f"every {s.interval}"
        tz = f" {s.timezone}" if s.timezone else ""
        parts.append(f"{what}{tz} ({'active' if s.active else 'inactive'})")
    for t in spec.triggers:
        expect = ",".join(sorted(getattr(t, "expect", ()))) or "any event"
        match = getattr(t, "match", None)
        where = ((match.root if match is not None else {}) or {}).get("prefect.resource.id")
        on = f" {where}" if where else ""
        parts.append(f"on {expect}{on} ({'enabled' if t.enabled else 'disabled'})")
    return f"{spec.name:<14} {spec.entrypoint:<40} {', '.join(parts) or 'no schedule'}"


def main(argv: Sequence[str] | None = None) -> None:
    """Serve prefect.yaml's deployments until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefect-file", default=PREFECT_YAML, help="default: %(default)s")
    parser.add_argument(
        "--name", action="append", help="serve only this deployment (repeatable); default: all"
    )
    parser.add_argument("--limit", type=int, default=None, help="most concurrent flow runs")
    parser.add_argument("--list", action="store_true", help="print the deployments and exit")
    args = parser.parse_args(argv)
    try:
        specs = load_specs(args.prefect_file, args.name)
    except SpecError as exc:
        raise SystemExit(f"error: {exc}") from None
    for spec in specs:
        print(describe(spec))
    if args.list:
        return
    from prefect import serve

    project_dir = Path(args.prefect_file).resolve().parent
    os.chdir(project_dir)  # relative entrypoints and parameter paths resolve from there
    serve(*build_deployments(specs, project_dir), limit=args.limit)


if __name__ == "__main__":
    main()
