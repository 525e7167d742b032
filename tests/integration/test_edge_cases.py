"""Edge cases a run survives or refuses: symlinks in a sync destination, keys across listing
pages, local names no key can have, endpoint passwords, a failing listing page, bad Dask
addresses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import plan_downloads

import prefect_s3_concurrency.flows.transfer_steps as transfer_steps
from prefect_s3_concurrency.flows.transfer import TransferFailed, download_prefix
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.s3.records import S3Object
from prefect_s3_concurrency.transforms.square import transform_files


def _linked_dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    (dest / "real").mkdir(parents=True)
    (dest / "link").symlink_to(dest / "real", target_is_directory=True)
    return dest


@pytest.mark.integration
def test_sync_through_a_symlinked_directory_deletes_nothing_it_wrote(
    rclone_s3, rclone_block, bucket_factory, tmp_path
) -> None:
    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="p/link/x", Body=b"via link")
    dest = _linked_dest(tmp_path)
    (dest / "real" / "old").write_text("extra")
    conn = S3Connection(credentials_block=rclone_block)
    for _ in range(2):  # every run: written, then never taken for an extra
        summary = download_prefix(
            f"s3://{bucket}/p", str(dest), delete_extra=True, connection=conn
        )
        assert (dest / "real" / "x").read_bytes() == b"via link"
        assert "real/x" not in summary.deleted
    assert not (dest / "real" / "old").exists()  # a real extra is still deleted


@pytest.mark.integration
def test_two_keys_one_file_across_listing_pages(
    rclone_s3, rclone_block, bucket_factory, tmp_path, monkeypatch
) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    for key, body in {"p/link/x": b"linked", "p/m": b"between", "p/real/x": b"direct"}.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    listed = transfer_steps.iter_objects

    def one_key_pages(*args, **kwargs) -> Iterator[list[S3Object]]:
        for page in listed(*args, **kwargs):  # pages of one key: the keys are pages apart
            yield from ([o] for o in page)

    monkeypatch.setattr(transfer_steps, "iter_objects", one_key_pages)
    dest = _linked_dest(tmp_path)
    conn = S3Connection(credentials_block=rclone_block)
    with pytest.raises(TransferFailed) as failed:
        download_prefix(f"s3://{bucket}/p", str(dest), connection=conn)
    summary = failed.value.summary
    assert list(summary.rejected) == ["p/link/x"] and "same file" in summary.rejected["p/link/x"]
    assert summary.objects == 2 and (dest / "real" / "x").read_bytes() == b"direct"


def test_a_transform_that_exits_fails_its_object_only(tmp_path: Path) -> None:
    """``sys.exit(3)`` in a transform (registered test transform ``exit13``) is a failure."""
    jobs = []
    for key, data in [("a", b"2\n"), ("b", b"1\n13\n"), ("c", b"3\n")]:
        (tmp_path / key).write_bytes(data)
        jobs.append((key, str(tmp_path / key), str(tmp_path / "out" / key)))
    result = transform_files(jobs, "exit13")
    assert [s.key for s in result.ok] == ["a", "c"]
    assert result.failed == {"b": "b: SystemExit: 3"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a", "c"]


@pytest.mark.integration
def test_sync_leaves_local_names_no_key_can_have_alone(
    rclone_s3, rclone_block, bucket_factory, tmp_path, caplog
) -> None:
    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="p/a.txt", Body=b"a")
    dest = tmp_path / "dest"
    dest.mkdir()
    odd = ["back\\slash.txt", "C:notes.txt"]
    for name in [*odd, "extra.txt"]:
        (dest / name).write_text("mine")
    summary = download_prefix(
        f"s3://{bucket}/p", str(dest), delete_extra=True,
        connection=S3Connection(credentials_block=rclone_block),
    )  # fmt: skip
    assert summary.deleted == ["extra.txt"] and not summary.failed
    assert all((dest / name).read_text() == "mine" for name in odd)
    notes = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage()]
    assert len(notes) == 1 and "2 local file(s)" in notes[0], notes


def test_a_local_path_over_the_system_limit_is_rejected_alone(tmp_path: Path) -> None:
    dest = tmp_path.joinpath(*["d" * 250] * 14)  # about 3,600 bytes: a key adds the rest
    dest.mkdir(parents=True)
    long_key = "p/" + "/".join(["e" * 250] * 3)
    items, rejected = plan_downloads([S3Object(long_key, 1), S3Object("p/ok", 1)], "p/", dest)
    assert [o.key for o, _ in items] == ["p/ok"]
    assert rejected == {long_key: "local path longer than 4,095 bytes"}


PASSWORD = "s3cret-Pa55word"
WITH_PASSWORD = f"http://admin:{PASSWORD}@127.0.0.1:9"


def test_an_endpoint_url_with_a_password_is_refused_by_the_cli(
    monkeypatch, capsys, tmp_path
) -> None:
    from prefect_s3_concurrency.cli import commands as cli

    runs: list[object] = []
    monkeypatch.setattr(cli, "run_flow", lambda call: runs.append(call) or 0)
    for command in ("cp", "square"):
        dest = str(tmp_path) if command == "cp" else "s3://out-bkt/o"
        code = cli.main([command, "s3://bkt/p", dest, "--endpoint-url", WITH_PASSWORD, "--json"])
        out, err = capsys.readouterr()
        assert code == 2 and runs == [] and PASSWORD not in out + err and "admin" not in err
        assert err.startswith("error: invalid value for --endpoint-url: ") and err.count("\n") == 1


def test_an_endpoint_url_with_a_password_fails_parameter_validation(caplog) -> None:
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.schema_tools import validate

    from prefect_s3_concurrency.flows.pipeline import square_objects

    params = {"source": "s3://bkt/p", "dest_dir": "out", "connection": {"endpoint_url": ""}}
    schema = download_prefix.parameters.model_dump(by_alias=True)
    for url, ok in [(WITH_PASSWORD, False), (f"https://{PASSWORD}@h/x", False),
                    ("http://127.0.0.1:9000/a@b", True)]:  # fmt: skip
        params["connection"]["endpoint_url"] = url  # type: ignore[index]
        errors = validate(params, schema, raise_on_error=False)  # what the API checks
        assert (errors == []) is ok, errors
        if not ok:
            with pytest.raises(ParameterTypeError) as info:
                download_prefix.validate_parameters(params)
            assert PASSWORD not in str(info.value) and "user name or password" in str(info.value)
    square = square_objects.parameters.model_dump(by_alias=True)
    for url, ok in [(WITH_PASSWORD, False), ("http://127.0.0.1:9", True)]:
        run = {"source": "s3://bkt/p", "dest": "s3://out/p", "connection": {"endpoint_url": url}}
        assert (validate(run, square, raise_on_error=False) == []) is ok
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)  # Prefect's own log


@pytest.mark.integration
def test_a_server_error_on_listing_page_two_fails_the_run_and_deletes_nothing(
    rclone_s3, rclone_block, bucket_factory, tmp_path, monkeypatch
) -> None:
    from botocore.exceptions import ClientError

    import prefect_s3_concurrency.s3.engines.boto3_engine as transfer
    from prefect_s3_concurrency.cli.run import exit_code_for

    bucket = bucket_factory(rclone_s3)
    rclone_s3.client().put_object(Bucket=bucket, Key="p/a.txt", Body=b"a")
    listed = transfer.list_pages

    def page_two_fails(*args, **kwargs):  # the 500 that outlasted botocore's retries
        yield next(iter(listed(*args, **kwargs)))
        raise ClientError(
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "ListObjectsV2",
        )

    monkeypatch.setattr(transfer, "list_pages", page_two_fails)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "maybe-listed-on-page-2.txt").write_text("mine")
    with pytest.raises(TransferFailed) as failed:
        download_prefix(f"s3://{bucket}/p", str(dest), delete_extra=True,
                        connection=S3Connection(credentials_block=rclone_block))  # fmt: skip
    summary = failed.value.summary
    assert exit_code_for(failed.value) == 1 and summary.deleted == [] and summary.objects == 1
    reason = summary.failed[f"s3://{bucket}/p (listing)"]
    assert "page 1" in reason and "InternalError" in reason, reason
    assert (dest / "maybe-listed-on-page-2.txt").read_text() == "mine"


def test_an_unreachable_dask_scheduler_is_a_configuration_error(monkeypatch) -> None:
    import socket
    import time

    from prefect_s3_concurrency.cli.run import exit_code_for
    from prefect_s3_concurrency.errors import ConfigurationError
    from prefect_s3_concurrency.flows.runners import allow_dask_address, io_runner

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("PREFECT_S3_DASK_ADDRESSES", "")
    allow_dask_address(address)
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=f"cannot reach the Dask scheduler at {address}"):
        io_runner(4, address)
    assert time.monotonic() - started < 5
    assert exit_code_for(ConfigurationError("x")) == 2


def test_cosmetics_worker_consoles_quoted_exports_empty_segments(capsys) -> None:
    import os
    import shlex
    from types import SimpleNamespace

    from prefect_s3_concurrency.cli.run import WORKER_CONSOLE_LEVEL, command_line_logs
    from prefect_s3_concurrency.cli.tools import _print_server
    from prefect_s3_concurrency.errors import UnsafeKeyError
    from prefect_s3_concurrency.local.paths import check_relative_key

    os.environ.pop(WORKER_CONSOLE_LEVEL, None)
    with command_line_logs(verbose=False):  # a failed chunk's worker logs ERROR + traceback
        assert os.environ[WORKER_CONSOLE_LEVEL] == "CRITICAL"
    server = SimpleNamespace(endpoint_url="http://127.0.0.1:1", access_key="a b", region="r",
                             secret_key="it's$x", root="srv")  # fmt: skip
    _print_server(server, [])
    exports = [ln.split("export ", 1)[1] for ln in capsys.readouterr().out.splitlines()
               if "export " in ln]  # fmt: skip
    parsed = dict(shlex.split(e)[0].split("=", 1) for e in exports)
    assert parsed["AWS_SECRET_ACCESS_KEY"] == "it's$x" and parsed["AWS_ACCESS_KEY_ID"] == "a b"
    for rel in ["/double.txt", "a//b.txt"]:  # "k//double.txt" under the prefix "k/"
        with pytest.raises(UnsafeKeyError, match="^empty path segment"):
            check_relative_key(rel)


def test_the_process_pool_template_lets_no_run_set_env_or_command() -> None:
    import json

    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.schema_tools import validate
    from prefect.workers.process import ProcessJobConfiguration

    root = Path(__file__).resolve().parents[2]
    path = "deployments/process-pool-template.json"
    assert "--base-job-template $(POOL_TEMPLATE)" in (root / "Makefile").read_text()
    assert f"POOL_TEMPLATE := {path}" in (root / "Makefile").read_text()
    template = json.loads((root / path).read_text())
    WorkPoolCreate(name="s3-pipelines", type="process", base_job_template=template)
    override = {"env": {"PREFECT_S3_DASK_ADDRESSES": "tcp://10.6.6.6:8786"}, "command": "sh -c x"}
    for values in [override, {"env.PREFECT_S3_DASK_ADDRESSES": "tcp://10.6.6.6:8786"}]:
        # The API validates a run's job variables against the pool's schema: refused.
        assert validate(values, template["variables"], raise_on_error=False, preprocess=True)
        # And a worker given them anyway ignores them.
        config = run_coro_as_sync(
            ProcessJobConfiguration.from_template_and_values(template, values)
        )
        assert "PREFECT_S3_DASK_ADDRESSES" not in config.env and config.command is None
    assert not validate({"working_dir": "/srv/runs"}, template["variables"], raise_on_error=False)
