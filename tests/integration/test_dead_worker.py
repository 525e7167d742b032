"""A dead process-pool worker fails only its chunk, never the run's others."""

from __future__ import annotations

from prefect.artifacts import Artifact

from prefect_s3_concurrency.flows.pipeline import square_objects
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed
from prefect_s3_concurrency.s3.connection import S3Connection


def test_dead_worker_fails_only_its_chunk(moto_server, bucket_factory, tmp_path) -> None:
    """The registered test transform ``die13`` calls ``os._exit`` in the worker on 13."""
    client = moto_server.client()
    src, dst = bucket_factory(moto_server, "in"), bucket_factory(moto_server, "out")
    inputs = {f"k{i:02d}.txt": f"{i}\n{i + 100}\n".encode() for i in range(12)}
    inputs["k05.txt"] = b"4\n13\n5\n"  # the worker squaring this object dies
    for key, body in inputs.items():
        client.put_object(Bucket=src, Key=f"in/{key}", Body=body)
    scratch = tmp_path / "scratch"
    state = square_objects(
        f"s3://{src}/in", f"s3://{dst}/out", transform="die13", workers=4, cpu_workers=2,
        min_process_mib=0, min_chunk_mib=0.000001, chunks_per_worker=6, scratch_dir=str(scratch),
        connection=S3Connection(endpoint_url=moto_server.endpoint_url), task_retries=0,
        return_state=True,
    )  # fmt: skip
    assert state.is_failed(), state
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, PipelineFailed), exc
    summary = exc.summary
    assert list(summary.failed) == ["in/k05.txt"]
    assert "worker process died" in summary.failed["in/k05.txt"]
    listed = client.list_objects_v2(Bucket=dst, Prefix="out/").get("Contents", [])
    outputs = {
        o["Key"][4:]: client.get_object(Bucket=dst, Key=o["Key"])["Body"].read() for o in listed
    }
    good = {k: v for k, v in inputs.items() if k != "k05.txt"}
    assert outputs == {
        k: b"".join(b"%d\n" % (int(n) ** 2) for n in v.split()) for k, v in good.items()
    }
    assert (summary.objects, summary.uploaded) == (11, 11)
    assert summary.chunks >= 6 and summary.used_processes
    artifact = Artifact.get("square-objects-summary")
    assert artifact is not None and "failed: in/k05.txt" in str(artifact.data)
    assert list(scratch.iterdir()) == []
