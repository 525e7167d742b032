"""Concurrent S3 pipelines for Prefect 3: threads for I/O, processes for CPU, futures to compose.

The public API::

    from prefect_s3_concurrency import download_prefix, upload_directory, square_objects
    from prefect_s3_concurrency import S3Connection, TransferSummary

The flows, the connection settings and the summary records are imported lazily, so that
``import prefect_s3_concurrency`` (and ``prefect-s3 --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "download_prefix": "prefect_s3_concurrency.flows.transfer",
    "upload_directory": "prefect_s3_concurrency.flows.transfer",
    "TransferFailed": "prefect_s3_concurrency.flows.transfer",
    "square_objects": "prefect_s3_concurrency.flows.pipeline",
    "PipelineSummary": "prefect_s3_concurrency.flows.pipeline_summary",
    "PipelineFailed": "prefect_s3_concurrency.flows.pipeline_summary",
    "TransferSummary": "prefect_s3_concurrency.flows.common",
    "S3Connection": "prefect_s3_concurrency.s3.connection",
    "S3PipelineError": "prefect_s3_concurrency.errors",
    "ConfigurationError": "prefect_s3_concurrency.errors",
    "local_prefect_server": "prefect_s3_concurrency.runtime.prefect_server",
}

__all__ = [
    "ConfigurationError",
    "PipelineFailed",
    "PipelineSummary",
    "S3Connection",
    "S3PipelineError",
    "TransferFailed",
    "TransferSummary",
    "__version__",
    "download_prefix",
    "local_prefect_server",
    "square_objects",
    "upload_directory",
]

if TYPE_CHECKING:
    from prefect_s3_concurrency.errors import ConfigurationError, S3PipelineError
    from prefect_s3_concurrency.flows.common import TransferSummary
    from prefect_s3_concurrency.flows.pipeline import square_objects
    from prefect_s3_concurrency.flows.pipeline_summary import PipelineFailed, PipelineSummary
    from prefect_s3_concurrency.flows.transfer import (
        TransferFailed,
        download_prefix,
        upload_directory,
    )
    from prefect_s3_concurrency.runtime.prefect_server import local_prefect_server
    from prefect_s3_concurrency.s3.connection import S3Connection


def __getattr__(name: str) -> Any:
    """Import a public name on first use."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prefect_s3_concurrency' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
