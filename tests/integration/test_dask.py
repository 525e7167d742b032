"""The Dask path: batch tasks and squaring chunks run in the worker processes of a
``distributed.LocalCluster`` on 127.0.0.1 started by the test, with exact outputs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from prefect_s3_concurrency import S3Connection, download_prefix, square_objects
from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.flows.runners import ALLOWED_ENV

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, set[int]]]:
    """A two-process LocalCluster; yields its address and its workers' PIDs."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, host="127.0.0.1",
            dashboard_address=None, worker_dashboard_address=None,
        ) as local,
        distributed.Client(local) as client,
    ):  # fmt: skip
        pids = set(client.run(os.getpid).values())
        yield local.scheduler_address, pids


@pytest.fixture
def allowed(cluster, monkeypatch) -> str:
    monkeypatch.setenv(ALLOWED_ENV, cluster[0])
    return cluster[0]


def test_an_address_not_allowed_is_refused(cluster, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(ALLOWED_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="not allowed here"):
        download_prefix(
            "s3://some-bucket/p", str(tmp_path), dask_address=cluster[0],
            connection=S3Connection(endpoint_url="http://127.0.0.1:9"),
        )  # fmt: skip


def test_batches_run_in_dask_workers(
    rclone_s3, rclone_block, bucket_factory, tmp_path, cluster, allowed
) -> None:
    bucket = bucket_factory(rclone_s3)
    client = rclone_s3.client()
    bodies = {f"p/d{i % 3}/k{i:03d}.bin": os.urandom(100 + i) for i in range(150)}
    for key, body in bodies.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    with distributed.Client(allowed) as dask_client, distributed.get_task_stream(dask_client) as ts:
        summary = download_prefix(
            f"s3://{bucket}/p", str(tmp_path / "out"), dask_address=allowed,
            connection=S3Connection(credentials_block=rclone_block),
        )  # fmt: skip
        workers = {w: pid for w, pid in dask_client.run(os.getpid).items()}
    assert (summary.objects, summary.failed) == (150, {})
    for key, body in bodies.items():
        assert (tmp_path / "out" / key[2:]).read_bytes() == body
    ran_on = {entry["worker"] for entry in ts.data}
    assert ran_on and {workers[w] for w in ran_on} <= cluster[1]
    assert os.getpid() not in cluster[1]


def test_square_chunks_run_in_dask_workers(
    rclone_s3, rclone_block, bucket_factory, tmp_path, cluster, allowed
) -> None:
    src, dst = bucket_factory(rclone_s3), bucket_factory(rclone_s3)
    client = rclone_s3.client()
    numbers = {f"in/n{i}.txt": [i * 7919 - 5000 + j for j in range(200)] for i in range(6)}
    for key, values in numbers.items():
        client.put_object(Bucket=src, Key=key, Body="\n".join(map(str, values)).encode())
    summary = square_objects(
        f"s3://{src}/in", f"s3://{dst}/out", dask_address=allowed, min_process_mib=0,
        scratch_dir=str(tmp_path), connection=S3Connection(credentials_block=rclone_block),
    )  # fmt: skip
    assert summary.failed == {} and summary.processed == len(numbers)
    assert summary.worker_pids and set(summary.worker_pids) <= cluster[1]
    for key, values in numbers.items():
        body = client.get_object(Bucket=dst, Key="out/" + key[3:])["Body"].read()
        expected = "".join(f"{v * v}\n" for v in values).encode()
        assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
