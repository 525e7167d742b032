"""The command line and the flows accept exactly the same values of every bounded parameter.

Each parameter is declared once (``prefect_s3_concurrency.parameters``); this checks the
outcome, not the declaration: the values at and beyond each bound that the flow's own
parameter schema states are given to ``prefect-s3`` and to the flow's validation, and both
must accept or refuse each alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_support import calls  # noqa: F401 - the fixture

from prefect_s3_concurrency.cli import commands as cli
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import upload_directory
from prefect_s3_concurrency.parameters import bounds
from prefect_s3_concurrency.s3.connection import S3Connection

UPLOAD = (["cp", "./d", "s3://bkt/p"], upload_directory, {"source_dir": "d", "dest": "s3://bkt/p"})
SQUARE = (["square", "s3://bkt-a/x", "s3://bkt-b/y"], square_objects,
          {"source": "s3://bkt-a/x", "dest": "s3://bkt-b/y"})  # fmt: skip
CASES = {
    "workers": UPLOAD, "task_retries": UPLOAD, "batch_max_objects": UPLOAD,
    "batch_max_mib": UPLOAD, "requests_in_flight": UPLOAD, "cpu_workers": SQUARE,
    "min_process_mib": SQUARE, "max_scratch_mib": SQUARE, "chunks_per_worker": SQUARE,
    "min_chunk_mib": SQUARE, "max_line_bytes": SQUARE,
}  # fmt: skip
_LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _limits(schema: dict[str, Any]) -> list[float]:
    """Every bound in a JSON schema (through ``anyOf``: ``int | None``)."""
    found = [schema[k] for k in _LIMITS if k in schema]
    for member in schema.get("anyOf", []):
        found += _limits(member)
    return found


def _probes(schema: dict[str, Any]) -> list[float]:
    step = 1 if "integer" in str(schema) else 0.5
    return sorted({v + d for v in _limits(schema) for d in (-step, 0, step)})


def _cli_accepts(argv: list[str], option: str, value: float, capsys: Any) -> bool:
    code = cli.main([*argv, f"--{option.replace('_', '-')}", str(value)])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert code == 0 or f"--{option.replace('_', '-')}" in err, err  # names the option
    return code == 0


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()


@pytest.mark.usefixtures("in_tmp", "calls")
@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_and_flow_accept_the_same_range(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, flow_obj, required = CASES[name]
    schema = flow_obj.parameters.properties[name]
    probes = _probes(schema)
    assert probes, f"{flow_obj.name}.{name} states no bounds"
    outcomes = []
    for value in probes:
        try:
            flow_obj.validate_parameters({**required, name: value})
            flow_ok = True
        except Exception:  # noqa: BLE001 - any refusal
            flow_ok = False
        cli_ok = _cli_accepts(argv, name, value, capsys)
        assert cli_ok == flow_ok, (name, value, cli_ok, flow_ok)
        outcomes.append(flow_ok)
    assert True in outcomes and False in outcomes, (name, probes)  # both sides were tested


@pytest.mark.usefixtures("in_tmp", "calls")
def test_cli_and_connection_accept_the_same_attempts(capsys: pytest.CaptureFixture[str]) -> None:
    field = S3Connection.model_fields["max_attempts"]
    limits = bounds(field)
    assert limits == {"gte": 1, "lte": 20}
    for value in (0, 1, 20, 21):
        try:
            S3Connection(max_attempts=value)
            model_ok = True
        except Exception:  # noqa: BLE001 - any refusal
            model_ok = False
        assert _cli_accepts(UPLOAD[0], "max_attempts", value, capsys) == model_ok, value


def test_option_help_is_the_run_forms_description() -> None:
    from typing import get_type_hints

    from prefect_s3_concurrency.cli.options import CopyOptions, SquareOptions, TransferOptions

    helps = {}
    for group in (TransferOptions, CopyOptions, SquareOptions):
        for field, hint in get_type_hints(group, include_extras=True).items():
            texts = [m.help for m in getattr(hint, "__metadata__", ()) if m.help]
            helps.update({field: texts[0]} if texts else {})
    for name, (_, flow_obj, _) in CASES.items():
        text = flow_obj.parameters.properties[name].get("description", "")
        assert text and helps[name] == text, (name, helps.get(name), text)
