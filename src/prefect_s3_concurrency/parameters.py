"""The bounded run parameters, declared once: type, bounds and description.

The flows use these types in their signatures, so Prefect validates runs with them and shows
the descriptions in the run form; the ``prefect-s3`` options take their help text and their
range from the same declaration (:func:`cli_parameter`), so the command line and the flows
accept exactly the same values (``tests/unit/test_parameters.py`` checks every pair).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args

from pydantic import Field
from pydantic.fields import FieldInfo

__all__ = [
    "DEFAULT_WORKERS", "BatchMiB", "BatchObjects", "ChunksPerWorker", "CpuWorkers", "MaxAttempts",
    "MaxLineBytes", "MinChunkMiB", "MinProcessMiB", "RequestsInFlight", "ScratchMiB",
    "TaskRetries", "Workers", "bounds", "cli_parameter", "description", "documented",
]  # fmt: skip
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_WORKERS = 16
Workers = Annotated[int, Field(ge=1, le=256, description="Concurrent S3 transfer threads.")]
BatchObjects = Annotated[int, Field(ge=1, le=100_000, description="Most objects per batch task.")]
BatchMiB = Annotated[int, Field(ge=1, description="Most MiB per batch task.")]
TaskRetries = Annotated[
    int,
    Field(
        ge=0, le=10,
        description="Prefect retries of a failed batch (only its failed objects are re-sent).",
    ),
]  # fmt: skip
RequestsInFlight = Annotated[
    int | None,
    Field(ge=1, le=1024, description="S3 requests each batch task keeps in flight "
          "(default: the engine's)."),
]  # fmt: skip
CpuWorkers = Annotated[int, Field(ge=1, le=64, description="Worker processes for squaring.")]
MinProcessMiB = Annotated[
    float,
    Field(
        ge=0, le=10**7,
        description="Below this much input (MiB), square in the flow's own process; "
        "0 always uses worker processes.",
    ),
]  # fmt: skip
ScratchMiB = Annotated[
    int, Field(ge=1, le=10**8, description="Most local scratch space in use, MiB.")
]
ChunksPerWorker = Annotated[int, Field(ge=1, le=64, description="CPU chunks per worker process.")]
MaxLineBytes = Annotated[
    int,
    Field(
        ge=64, le=2**31,
        description="Longest input line accepted, bytes (newline included); a longer one "
        "fails its object, so memory stays bounded whatever the input.",
    ),
]  # fmt: skip
MinChunkMiB = Annotated[float, Field(gt=0, le=10**6, description="Smallest CPU chunk, MiB.")]
MaxAttempts = Annotated[
    int, Field(ge=1, le=20, description="botocore attempts per request, including the first "
               "(1 = no retry).")
]  # fmt: skip

_BOUNDS = (("ge", "gte"), ("le", "lte"), ("gt", "gt"), ("lt", "lt"))
_DECLARED = {
    "Workers": Workers, "BatchObjects": BatchObjects, "BatchMiB": BatchMiB,
    "TaskRetries": TaskRetries, "RequestsInFlight": RequestsInFlight, "CpuWorkers": CpuWorkers,
    "MinProcessMiB": MinProcessMiB, "ScratchMiB": ScratchMiB, "ChunksPerWorker": ChunksPerWorker,
    "MaxLineBytes": MaxLineBytes, "MinChunkMiB": MinChunkMiB, "MaxAttempts": MaxAttempts,
}  # fmt: skip


def _field(declared: Any) -> FieldInfo:
    """The pydantic field of an ``Annotated`` parameter type (or a model's field itself)."""
    if isinstance(declared, FieldInfo):
        return declared
    infos = [m for m in get_args(declared)[1:] if isinstance(m, FieldInfo)]
    if not infos:
        raise TypeError(f"{declared!r} declares no pydantic Field")
    return FieldInfo.merge_field_infos(*infos)


def bounds(declared: Any) -> dict[str, Any]:
    """The range of a parameter, as cyclopts' ``Number`` validator spells it
    (``{"gte": 1, "lte": 256}``)."""
    found: dict[str, Any] = {}
    for item in _field(declared).metadata:
        for pydantic_name, cyclopts_name in _BOUNDS:
            value = getattr(item, pydantic_name, None)
            if value is not None:
                found[cyclopts_name] = value
    return found


def description(declared: Any) -> str:
    """The parameter's description (the run form's and the option's help text)."""
    text = _field(declared).description
    if not text:
        raise TypeError(f"{declared!r} has no description")
    return text


def cli_parameter(declared: Any, **options: Any) -> Any:
    """A cyclopts ``Parameter`` with the declaration's help text and range.

    Args:
        declared: An ``Annotated`` type of this module, or a model's ``FieldInfo``.
        **options: Further ``Parameter`` arguments (``name``, ``metavar``, ...).
    """
    from cyclopts import Parameter, validators

    found = bounds(declared)
    validator = validators.Number(**found) if found else None
    return Parameter(help=description(declared), validator=validator, **options)


def documented(fn: F) -> F:
    """Add each declared parameter's description to ``fn``'s docstring ``Args:`` section.

    Prefect builds a flow's run form from its docstring (a description there replaces the
    type's), so a flow lists only its other parameters and is decorated with this, under
    ``@flow``: the run form then shows the same text as the command line's help.
    """
    lines = []
    for name, param in inspect.signature(fn).parameters.items():
        annotation = param.annotation
        declared = _DECLARED.get(annotation) if isinstance(annotation, str) else None
        declared = declared or next((d for d in _DECLARED.values() if d == annotation), None)
        if declared is not None:
            lines.append(f"        {name}: {description(declared)}")
    doc = fn.__doc__ or ""
    if lines and "    Args:\n" in doc:
        fn.__doc__ = doc.replace("    Args:\n", "    Args:\n" + "\n".join(lines) + "\n", 1)
    return fn
