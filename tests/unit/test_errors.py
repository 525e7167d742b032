"""The project's errors keep their payload and their one line across process boundaries."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from prefect_s3_concurrency.errors import (
    FailedWithPayload,
    S3PipelineError,
    UnsupportedObjectError,
    WrongRegionError,
    archived_error,
)
from prefect_s3_concurrency.flows.common import TransferSummary
from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
from prefect_s3_concurrency.flows.transfer import TransferFailed
from prefect_s3_concurrency.s3.records import BatchResult
from prefect_s3_concurrency.tasks.cpu import ChunkFailed, ChunkReport
from prefect_s3_concurrency.tasks.s3 import BatchFailed
from prefect_s3_concurrency.transforms.square import ChunkResult

FAILED = {"a\nb.txt": "IntegrityError: MD5 mismatch", "c.txt": "LocalIOError: disk full"}


def _payload_errors() -> list[FailedWithPayload]:
    summary = TransferSummary(direction="download", source="s3://b/p", destination="d")
    summary.failed, summary.rejected = dict(FAILED), {"../x": "unsafe key"}
    pipeline = PipelineSummary(source="s3://b/in", destination="s3://b/o", transform="square")
    pipeline.failed = dict(FAILED)
    return [
        TransferFailed(summary, allow_rejected=True),
        PipelineFailed(pipeline),
        BatchFailed(BatchResult(transferred=["ok.txt"], failed=dict(FAILED))),
        ChunkFailed(ChunkReport(ChunkResult(failed=dict(FAILED), pid=7), api_url=None)),
    ]


def _fields(error: BaseException) -> dict:
    return {k: v for k, v in vars(error).items() if k != "_made_with"}


@pytest.mark.parametrize("error", _payload_errors(), ids=lambda e: type(e).__name__)
def test_payload_errors_pickle_whole_and_say_one_line(error: FailedWithPayload) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert _fields(back) == _fields(error) and _fields(error)  # summary, result or report
    assert "\n" not in str(error) and "a\\nb.txt" in str(error)


def test_field_errors_keep_every_argument_and_attribute() -> None:
    region = WrongRegionError("bkt", "eu-west-1", signed="us-east-1")
    back = pickle.loads(pickle.dumps(region))
    assert str(back) == str(region) and "signed for us-east-1" in str(back)
    archived = pickle.loads(pickle.dumps(archived_error("GLACIER")))
    assert isinstance(archived, UnsupportedObjectError) and archived.archived


def _raise_batch_failed() -> None:
    raise _payload_errors()[2]


def test_a_process_pool_worker_returns_the_payload() -> None:
    with ProcessPoolExecutor(1) as pool, pytest.raises(BatchFailed) as info:
        pool.submit(_raise_batch_failed).result()
    assert info.value.result.transferred == ["ok.txt"] and info.value.result.failed == FAILED


def test_no_error_class_writes_its_own_pickling() -> None:
    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in [sub, *subclasses(sub)]]

    own = [c for c in subclasses(S3PipelineError) if "__reduce__" in vars(c)]
    assert own == [] and len(subclasses(FailedWithPayload)) >= 4
