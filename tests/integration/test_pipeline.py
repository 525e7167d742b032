"""The square-objects flow end to end: moto's server, rclone serve s3, and ephemeral Prefect.

Runs with worker processes cost seconds each (pool start), so each such run is shared by
several assertions, and re-runs use the in-flow fallback.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.artifacts import Artifact

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
from prefect_s3_concurrency.flows.streaming import ChunkStreamer
from prefect_s3_concurrency.s3.connection import S3Connection
from prefect_s3_concurrency.transforms.square import unlimited_int_digits

REPO = Path(__file__).resolve().parents[2]


def _big(digits: int, rng: random.Random) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits - 1))


def _inputs() -> dict[str, bytes]:
    rng = random.Random(4)
    big = [_big(1000, rng), "-" + _big(1000, rng), _big(2500, rng), "+" + _big(1001, rng)]
    many = "\n".join(str(rng.randint(-(10**30), 10**30)) for _ in range(3000))
    return {
        "signs.txt": b"-3\n0\n+4\n-0\n007\n-1\n1",  # no trailing newline
        "big/thousand digits.txt": ("\n".join(big) + "\n").encode(),
        "crlf.txt": b"12\r\n-5\r\n99999999999999999999\r\n",
        "empty.txt": b"",
        "deep/er/ünï cødé.txt": many.encode(),
        "bad.txt": b"1\n2\nthree\n4\n",
        **{f"bulk/{i:02d}.txt": f"{i}\n-{i * 7}\n".encode() for i in range(8)},
    }


def _expected(body: bytes, fn=lambda n: n * n) -> bytes:
    with unlimited_int_digits():
        return b"".join(b"%d\n" % fn(int(line)) for line in body.splitlines())


def _seed(client, bucket: str, prefix: str, inputs: dict[str, bytes]) -> None:
    for key, body in inputs.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)


def _outputs(client, bucket: str, prefix: str) -> dict[str, tuple[bytes, str]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) + 1 :]] = (body, item["ETag"])
    return out


def _run_failed(**kwargs) -> PipelineSummary:
    state = square_objects(return_state=True, **kwargs)
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, PipelineFailed), exc
    return exc.summary


def test_moto_processes_exact_squares_failures_then_idempotent_rerun(
    moto_server, bucket_factory, tmp_path, caplog
) -> None:
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    inputs = _inputs()
    _seed(client, src, "data", inputs)
    conn = S3Connection(endpoint_url=moto_server.endpoint_url)
    scratch = tmp_path / "scratch"
    params = dict(
        source=f"s3://{src}/data", dest=f"s3://{dst}/squared", workers=4, cpu_workers=2,
        min_chunk_mib=0.001, chunks_per_worker=2, scratch_dir=str(scratch), connection=conn,
    )  # fmt: skip
    summary = _run_failed(min_process_mib=0, **params)

    good = {k: v for k, v in inputs.items() if k != "bad.txt"}
    outputs = _outputs(client, dst, "squared")
    assert {k: body for k, (body, _) in outputs.items()} == {
        k: _expected(v) for k, v in good.items()
    }
    assert outputs["empty.txt"][0] == b"" and outputs["crlf.txt"][0].startswith(b"144\n25\n")
    assert list(summary.failed) == ["data/bad.txt"]
    assert "data/bad.txt: line 3: not an integer: 'three'" in summary.failed["data/bad.txt"]
    assert (summary.objects, summary.uploaded, summary.skipped) == (len(good), len(good), 0)
    assert summary.numbers == sum(len(v.splitlines()) for v in good.values())
    assert summary.input_bytes == sum(len(v) for v in good.values())
    assert summary.output_bytes == sum(len(body) for body, _ in outputs.values())
    # Squaring really ran in worker processes, which reported to the flow's own API.
    assert summary.used_processes and summary.flow_pid == os.getpid()
    assert summary.worker_pids and os.getpid() not in summary.worker_pids
    assert summary.api_url and summary.worker_api_urls == [summary.api_url]
    assert summary.chunks >= 2 and summary.square_cpu_seconds > 0
    assert summary.wall_seconds >= max(summary.download_seconds, summary.square_seconds)
    assert list(scratch.iterdir()) == []  # scratch removed although the run failed
    artifact = Artifact.get("square-objects-summary")
    assert artifact is not None and "failed: data/bad.txt" in str(artifact.data)

    # Re-run (small workload: in the flow process): same outputs, nothing re-uploaded.
    with caplog.at_level(logging.INFO):
        again = _run_failed(min_process_mib=1024, **params)
    assert _outputs(client, dst, "squared") == outputs
    assert (again.objects, again.uploaded, again.skipped) == (len(good), 0, len(good))
    assert not again.used_processes and again.worker_pids == [os.getpid()]
    assert "below min_process_mib=1024" in again.mode_reason
    assert again.mode_reason in caplog.text
    assert list(again.failed) == ["data/bad.txt"] and list(scratch.iterdir()) == []


def test_rclone_custom_transform_streams_within_scratch_bound(
    rclone_s3, bucket_factory, tmp_path, monkeypatch
) -> None:
    for name, value in rclone_s3.env().items():  # boto3's default chain finds rclone's keys
        monkeypatch.setenv(name, value)
    client = rclone_s3.client()
    src, dst = bucket_factory(rclone_s3, "in"), bucket_factory(rclone_s3, "out")
    rng = random.Random(9)
    inputs = {  # six ~150 kB objects: one chunk each; ~2 chunks fit in 1 MiB of scratch
        f"part-{i}.txt": "\n".join(
            str(rng.randint(-(10**40), 10**40)) for _ in range(3600)
        ).encode()
        for i in range(6)
    }
    _seed(client, src, "in", inputs)
    conn = S3Connection(endpoint_url=rclone_s3.endpoint_url, region=rclone_s3.region)
    summary = square_objects(
        f"s3://{src}/in", f"s3://{dst}/out", transform="cube",
        workers=4, cpu_workers=2, min_process_mib=0, min_chunk_mib=0.001, max_scratch_mib=1,
        scratch_dir=str(tmp_path), connection=conn,
    )  # fmt: skip
    outputs = _outputs(client, dst, "out")
    assert {k: b for k, (b, _) in outputs.items()} == {
        k: _expected(v, lambda n: n**3) for k, v in inputs.items()
    }
    assert summary.transform == "cube" and not summary.failed
    assert summary.used_processes and os.getpid() not in summary.worker_pids
    assert summary.chunks == 6
    assert summary.peak_scratch_bytes <= summary.max_scratch_bytes == 2**20
    # The bound admits ~2 chunks, so later downloads must wait for squares and uploads:
    # the stages overlap instead of running one after another.
    spans = summary.stage_spans
    assert spans["square"][0] < spans["download"][1]
    assert spans["upload"][0] < spans["download"][1]
    assert list(tmp_path.iterdir()) == []


def test_scratch_removed_when_the_run_breaks(
    moto_server, bucket_factory, tmp_path, monkeypatch
) -> None:
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    _seed(client, src, "in", {f"{i}.txt": b"1\n2\n" for i in range(5)})

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure after squaring")

    monkeypatch.setattr(ChunkStreamer, "_upload_done", boom)
    state = square_objects(
        f"s3://{src}/in", f"s3://{dst}/out", scratch_dir=str(tmp_path), return_state=True,
        connection=S3Connection(endpoint_url=moto_server.endpoint_url),
    )  # fmt: skip
    assert state.is_failed() and "injected failure" in str(state.message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dest": "s3://same-bkt/in/out"}, ConfigurationError, "overlaps source"),
    ],
)
def test_bad_configuration_fails_before_any_transfer(kwargs, error, match) -> None:
    params = {"source": "s3://same-bkt/in", "dest": "s3://other-bkt/out", **kwargs}
    with pytest.raises(error, match=match):
        square_objects(**params, connection=S3Connection(endpoint_url="http://127.0.0.1:9"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"cpu_workers": 0}, "cpu_workers: Input should be greater than or equal to 1"),
        ({"workers": 0}, "workers: Input should be greater than or equal to 1"),
        ({"max_scratch_mib": 0}, "max_scratch_mib: Input should be greater than or equal to 1"),
        ({"min_process_mib": -1}, "min_process_mib: Input should be greater than or equal to 0"),
        ({"dest": "http://x/y"}, "dest: Value error, not an s3:// URL: 'http://x/y'"),
        ({"transform": "a b"}, "transform: String should match pattern"),
        ({"transform": "os:_exit"}, "transform: Value error, 'os:_exit' is not a registered"),
    ],
)
def test_parameters_are_validated(bad, message) -> None:
    from prefect.exceptions import ParameterTypeError

    params = {"source": "s3://in-bkt/a", "dest": "s3://out-bkt/b", **bad}
    with pytest.raises(ParameterTypeError, match=message):
        square_objects(**params)


def test_cli_maps_arguments_to_the_flow(monkeypatch) -> None:
    from prefect_s3_concurrency.cli import commands as cli

    calls = []
    monkeypatch.setattr(cli, "run_flow", lambda call: calls.append(call) or 0)
    argv = ["square", "s3://in-bkt/a", "s3://out-bkt/b", "--cpu-workers", "3",
            "--min-process-mib", "0.5", "--transform", "pkg.mod:fn", "--endpoint-url",
            "http://127.0.0.1:9"]  # fmt: skip
    assert cli.main(argv) == 0
    flow_obj = calls[0].load()
    kwargs = calls[0].arguments(flow_obj)
    assert flow_obj is square_objects
    assert kwargs["cpu_workers"] == 3 and kwargs["min_process_mib"] == 0.5
    assert (kwargs["source"], kwargs["dest"], kwargs["transform"]) == (
        "s3://in-bkt/a",
        "s3://out-bkt/b",
        "pkg.mod:fn",
    )
    assert kwargs["connection"] == S3Connection(endpoint_url="http://127.0.0.1:9")


EPHEMERAL_RUN = """
import json, os, sys
from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.s3.connection import S3Connection
s = square_objects(sys.argv[1], sys.argv[2], cpu_workers=2, min_process_mib=0,
                   min_chunk_mib=0.001, connection=S3Connection(endpoint_url=sys.argv[3]))
print("SUMMARY " + json.dumps(dict(s.model_dump(), pid=os.getpid())))
"""


@pytest.mark.one_engine  # the temporary server, not S3, is under test
def test_ephemeral_mode_workers_share_the_flows_temporary_server(
    moto_server, bucket_factory, tmp_path
) -> None:
    """No PREFECT_API_URL: one temporary server, which every worker process reports to."""
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    inputs = {f"{i}.txt": f"{i}\n-{i}1\n".encode() for i in range(4)}
    _seed(client, src, "in", inputs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", EPHEMERAL_RUN, f"s3://{src}/in", f"s3://{dst}/out",
         moto_server.endpoint_url],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    summary = json.loads(log.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["used_processes"] and summary["pid"] not in summary["worker_pids"]
    assert summary["api_url"].startswith("http://127.0.0.1:")
    assert summary["worker_api_urls"] == [summary["api_url"]]
    assert log.count("Starting temporary server") == 1, log[-3000:]
    outputs = _outputs(client, dst, "out")
    assert {k: b for k, (b, _) in outputs.items()} == {k: _expected(v) for k, v in inputs.items()}
