"""Helpers of the command-line tests: record the flow call a command would run."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_s3_concurrency.cli import commands as cli


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the FlowCall each command would run, instead of running it."""
    seen: list[Any] = []

    def fake_run(call: Any) -> int:
        seen.append(call)
        return 0

    monkeypatch.setattr(cli, "run_flow", fake_run)
    return seen


def flow_and_kwargs(call: Any) -> tuple[Any, dict[str, Any]]:
    flow_obj = call.load()
    return flow_obj, call.arguments(flow_obj)


def one_error(err: str) -> str:
    """The single stderr line, asserting it is an ``error:`` line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]
