"""The ``prefect-s3`` command: parsing, help, one-line errors and exit codes (in-process)."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from cli_support import calls, flow_and_kwargs, one_error  # noqa: F401 - calls: a fixture

from prefect_s3_concurrency.cli import commands as cli
from prefect_s3_concurrency.cli import output as cli_output
from prefect_s3_concurrency.cli.options import (
    ConnectionOptions,
    CopyOptions,
    SquareOptions,
    TransferOptions,
)
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.transfer import download_prefix, upload_directory
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.upload_options import StorageClass

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("cp", "sync", "square", "serve", "local-s3", "bench")
STORAGE_CLASSES = "|".join(get_args(StorageClass))


def test_cp_direction_follows_argument_order(
    calls: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # an upload's source must exist before anything starts
    assert cli.main(["cp", "s3://bkt/raw", "out", "--workers", "4", "--include", "*.csv",
                     "--include", "*.txt", "--endpoint-url", "http://127.0.0.1:9",
                     "--max-attempts", "2", "--no-skip-existing",
                     "--request-budget", "s3-prod"]) == 0  # fmt: skip
    assert cli.main(["cp", "./data", "s3://bkt/copy", "--dry-run", "--exclude", "*.tmp"]) == 0
    flow_obj, kwargs = flow_and_kwargs(calls[0])
    assert flow_obj is download_prefix and kwargs == {
        "source": "s3://bkt/raw", "dest_dir": "out", "include": ["*.csv", "*.txt"],
        "exclude": None, "workers": 4, "dry_run": False, "task_retries": 2,
        "batch_max_objects": 100, "skip_existing": False, "batch_max_mib": 256,
        "delete_extra": False, "fail_if_empty": False, "allow_rejected": False,
        "dask_address": None, "engine": "auto", "requests_in_flight": None,
        "request_budget": "s3-prod",
        "connection": S3Connection(endpoint_url="http://127.0.0.1:9", max_attempts=2),
    }  # fmt: skip
    flow_obj, kwargs = flow_and_kwargs(calls[1])
    assert flow_obj is upload_directory and kwargs["source_dir"] == "./data"
    assert kwargs["dest"] == "s3://bkt/copy" and kwargs["dry_run"] and not kwargs["delete_extra"]
    assert kwargs["exclude"] == ["*.tmp"] and kwargs["connection"] == S3Connection()


def test_sync_is_cp_with_delete_extra(calls: list[Any]) -> None:
    assert cli.main(["sync", "s3://bkt/raw", "out", "--credentials", "prod-s3"]) == 0
    flow_obj, kwargs = flow_and_kwargs(calls[0])
    assert flow_obj is download_prefix and kwargs["delete_extra"] is True
    assert kwargs["connection"] == S3Connection(credentials_block="prod-s3")


def test_square_maps_its_options(calls: list[Any]) -> None:
    argv = ["square", "s3://in-bkt/a", "s3://out-bkt/b", "--cpu-workers", "3",
            "--min-process-mib", "0.5", "--transform", "pkg.mod:fn", "--recompute",
            "--region", "eu-west-1", "--retry-mode", "adaptive"]  # fmt: skip
    assert cli.main(argv) == 0
    flow_obj, kwargs = flow_and_kwargs(calls[0])
    assert flow_obj is square_objects
    assert (kwargs["source"], kwargs["dest"], kwargs["transform"]) == (
        "s3://in-bkt/a", "s3://out-bkt/b", "pkg.mod:fn")  # fmt: skip
    assert kwargs["cpu_workers"] == 3 and kwargs["min_process_mib"] == 0.5 and kwargs["recompute"]
    assert kwargs["connection"] == S3Connection(region="eu-west-1", retry_mode="adaptive")
    assert "dry_run" not in kwargs and "skip_existing" not in kwargs


def test_square_refuses_an_option_its_flow_lacks(calls: list[Any]) -> None:
    cli.main(["square", "s3://in-bkt/a", "s3://out-bkt/b", "--dry-run"])
    with pytest.raises(Exception, match="--dry-run is not supported by square-objects"):
        flow_and_kwargs(calls[0])


@pytest.mark.parametrize(
    "argv",
    [
        ["cp", "--json", "s3://bkt/p", "d"],
        ["cp", "s3://bkt/p", "d", "--json"],
        ["cp", "s3://bkt/p", "--json", "d"],
        ["--json", "cp", "s3://bkt/p", "d"],
    ],
)
def test_options_anywhere_on_the_line(calls: list[Any], argv: list[str]) -> None:
    assert cli.main(argv) == 0
    assert calls[0].output.json is True
    assert flow_and_kwargs(calls[0])[1]["source"] == "s3://bkt/p"


def test_option_defaults_are_the_flows_defaults() -> None:
    groups = [(download_prefix, (TransferOptions, CopyOptions)),
              (upload_directory, (TransferOptions, CopyOptions)),
              (square_objects, (TransferOptions, SquareOptions))]  # fmt: skip
    for flow_obj, classes in groups:
        params = inspect.signature(flow_obj.fn).parameters
        for cls in classes:
            for field in dataclasses.fields(cls):
                if field.name in params:
                    default = params[field.name].default
                    assert field.default == default, (flow_obj.name, field.name)
    conn = S3Connection()
    options = ConnectionOptions()
    assert (options.retry_mode, options.max_attempts) == (conn.retry_mode, conn.max_attempts)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["square", "data/raw", "s3://bkt/x"],
         "error: not an s3:// URL: 'data/raw' (expected s3://bucket/prefix)"),
        (["square", "s3://bkt/x", "out/dir"],
         "error: not an s3:// URL: 'out/dir' (expected s3://bucket/prefix)"),
        (["cp", "s3://My_Bucket/x", "d"], "error: invalid bucket name 'My_Bucket'"),
        (["cp", "S3:/bkt/x", "d"], "error: not an s3:// URL: 'S3:/bkt/x'"),
        (["cp", "data/raw", "out"], "error: neither 'data/raw' nor 'out' is an s3:// URL"),
        (["cp", "s3://bkt/a", "s3://bkt/b"], "error: both 's3://bkt/a' and 's3://bkt/b' are S3"),
        (["cp", "s3://bkt/p", "d", "--retry-mode", "foo"], "error: Invalid value \"foo\" for "
         "--retry-mode. Choose from: \"standard\", \"adaptive\"."),
        (["cp", "s3://bkt/p", "d", "--max-attempts", "0"], "error: Invalid value \"0\" for "
         "--max-attempts. Must be >= 1."),
        (["cp", "s3://bkt/p", "d", "--workers", "0"], "error: Invalid value \"0\" for --workers."),
        (["cp", "s3://bkt/p", "d", "--endpoint-url", "ftp://x"],
         "error: invalid value for --endpoint-url: endpoint_url must start with http://"),
        (["cp", "s3://bkt/p"], "error: Command \"cp\" parameter DST requires an argument."),
        (["cp", "s3://bkt/p", "d", "--bogus"], "error: Unknown option: --bogus."),
        (["nope"], "error: Unknown command \"nope\""),
        (["square", "data\n/raw\x1b[31m", "s3://bkt/x"], "error: not an s3:// URL: "
         "'data\\n/raw\\x1b[31m'"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_with_exit_2(
    calls: list[Any], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and calls == []
    line = one_error(err)
    assert line.startswith(message), line
    assert "pydantic" not in err and "pattern" not in err


def test_connection_values_are_checked_in_one_line() -> None:
    with pytest.raises(Exception, match=r"^invalid value for --endpoint-url: ") as info:
        ConnectionOptions(endpoint_url="minio:9000").connection()
    assert "\n" not in str(info.value)


def _help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main([command, "--help"]) == 0
    return capsys.readouterr().out


def test_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "Exit codes" in top and all(c in top for c in COMMANDS)
    for command in COMMANDS:
        text = _help_of(command, capsys)
        assert "`" not in text and "__" not in text, command
        words = re.sub(rf"\b(PREFECT_API_URL|{STORAGE_CLASSES})\b", "", text)  # S3's names
        assert not re.search(r"[A-Z]+_[A-Z_]+\b", words), command
        for argument in cli.app[command].assemble_argument_collection():
            if argument.show:
                assert argument.parameter.help, (command, argument.name)
                assert argument.name.split()[0] in text, (command, argument.name)


def test_progress_only_on_terminals() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert cli_output.progress_wanted(True, Tty(), Tty())
    assert not cli_output.progress_wanted(True, io.StringIO(), Tty())
    assert not cli_output.progress_wanted(True, Tty(), io.StringIO())
    assert not cli_output.progress_wanted(False, Tty(), Tty())


def test_progress_says_listing_until_the_totals_are_final() -> None:
    """No bar whose total grows while the listing pages: a count first, then the bar."""
    bar = cli_output.ProgressBar("download")
    bar.expect(1000, 3 * 2**20)
    bar.advance(1, 100)
    task = bar.progress.tasks[0]
    assert task.description == "listing... 1000 objects, 3.0 MiB so far" and task.total is None
    bar.expect(500, 2**20)
    bar.planned()
    bar.advance(2, 50)
    task = bar.progress.tasks[0]
    assert (task.description, task.completed, task.total) == ("download", 150, 4 * 2**20)
    assert task.fields["counts"] == "3/1500 objects, 0.0/4.0 MiB"  # binary units


def test_messages_speak_the_command_line() -> None:
    text = "link skipped (follow_symlinks=True uploads it); Value error, bad (x=True)"
    assert cli_output.cli_words(text) == "link skipped (--follow-symlinks uploads it); bad (x=True)"


def test_serve_lists_and_needs_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--list", "--prefect-file", str(ROOT / "prefect.yaml")]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("s3-download", "s3-upload", "s3-square"))
    assert cli.main(["serve", "--prefect-file", str(ROOT / "nope.yaml"), "--list"]) == 2
    assert "nope.yaml" in one_error(capsys.readouterr().err)
    monkeypatch.setattr("prefect_s3_concurrency.cli.server.configured_api_url", lambda: None)
    assert cli.main(["serve"]) == 2
    assert "PREFECT_API_URL is not set" in one_error(capsys.readouterr().err)


def test_bench_needs_the_repository(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert cli.main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark 'nope': choose from transfer" in one_error(capsys.readouterr().err)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["bench"]) == 2
    assert "benchmarks are not installed" in one_error(capsys.readouterr().err)


def test_json_error_when_the_options_are_bad(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["cp", "data/raw", "out", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out) == {"exit_code": 2, "error": one_error(err).removeprefix("error: ")}


def test_an_unexpected_error_is_one_line_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(call: Any) -> int:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cli, "run_flow", broken)
    assert cli.main(["cp", "s3://bkt/p", "d"]) == 1
    assert one_error(capsys.readouterr().err) == (
        "error: unexpected error: RuntimeError: disk on fire\\nsecond line"
    )  # one line: the newline is escaped
