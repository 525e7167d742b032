"""The transform registry: which ``int -> int`` functions a run may name.

A run parameter (``transform``, e.g. from a UI form) is only ever a *name*. Names resolve
through configuration that run parameters cannot change, never through an import path from
the parameter itself (``os:_exit`` and ``time:sleep`` are refused):

* ``square``, built in (it cannot be replaced);
* the Python entry-point group ``prefect_s3_concurrency.transforms`` of the installed
  packages, e.g. in a plugin's ``pyproject.toml``::

      [project.entry-points."prefect_s3_concurrency.transforms"]
      cube = "my_package.transforms:cube"

* the environment variable ``PREFECT_S3_TRANSFORMS="name=module:function,..."`` of the
  process that runs the flow (a worker or ``serve`` process; spawned pool workers inherit
  it). It overrides entry points of the same name.

No Prefect import here: spawned process-pool workers resolve transforms too.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from importlib import metadata

from prefect_s3_concurrency.errors import S3PipelineError, printable
from prefect_s3_concurrency.runtime import caches

TRANSFORMS_ENV = "PREFECT_S3_TRANSFORMS"
ENTRY_POINT_GROUP = "prefect_s3_concurrency.transforms"
_NAME_RE = re.compile(r"[A-Za-z_][\w.-]*")
_TARGET_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


class TransformError(S3PipelineError, ValueError):
    """A transform name is not registered, cannot be resolved, or misbehaves."""


class TransformImportError(TransformError, ImportError):
    """The module a registered transform names cannot be imported."""


def square(n: int) -> int:
    """Return ``n * n`` (the built-in transform)."""
    return n * n


BUILTIN_TRANSFORMS: dict[str, Callable[[int], int]] = {"square": square}


def _one_line(exc: BaseException) -> str:
    """Render an exception message on a single line."""
    return " ".join(str(exc).split())


@caches.cached(maxsize=None)
def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _from_env(value: str) -> dict[str, str]:
    """Parse ``name=module:function,...``; raise a clear error naming the variable."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not _NAME_RE.fullmatch(name) or not _TARGET_RE.fullmatch(target):
            raise TransformError(
                f"{TRANSFORMS_ENV}: bad entry {printable(item)!r}: expected name=module:function"
            )
        if name in found:
            raise TransformError(f"{TRANSFORMS_ENV}: transform {name!r} is registered twice")
        found[name] = target
    return found


def registered_transforms() -> dict[str, str]:
    """Return ``name -> 'module:function'`` of every transform a run may name.

    Raises:
        TransformError: If ``PREFECT_S3_TRANSFORMS`` is malformed.
    """
    registry = {**_entry_points(), **_from_env(os.environ.get(TRANSFORMS_ENV, ""))}
    for name, fn in BUILTIN_TRANSFORMS.items():
        registry[name] = f"{fn.__module__}:{fn.__qualname__}"
    return registry


@caches.cached(maxsize=64)
def _resolve(name: str, target: str) -> Callable[[int], int]:
    module_name, attr_path = target.split(":", 1)
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TransformImportError(
            f"transform {name!r} ({target}): cannot import module {module_name!r}: {exc}"
        ) from exc
    except Exception as exc:  # the module exists but fails while importing
        raise TransformImportError(
            f"transform {name!r} ({target}): importing {module_name!r} failed: "
            f"{type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TransformError(
                f"transform {name!r} ({target}): {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if not callable(obj):
        raise TransformError(f"transform {name!r} ({target}): {type(obj).__name__} is not callable")
    return obj


def load_transform(name: str) -> tuple[str, Callable[[int], int]]:
    """Resolve a registered transform name to ``(name, callable)``.

    Args:
        name: ``"square"`` or a name registered by an entry point or ``PREFECT_S3_TRANSFORMS``.

    Raises:
        TransformError: The name is not registered (the message lists the registered ones),
            or its function is missing or not callable.
        TransformImportError: Its module cannot be imported.
    """
    name = name.strip()
    if name in BUILTIN_TRANSFORMS:
        return name, BUILTIN_TRANSFORMS[name]
    registry = registered_transforms()
    if name not in registry:
        raise TransformError(
            f"{printable(name)!r} is not a registered transform: choose one of "
            f"[{', '.join(sorted(registry))}] (register more through the "
            f"{ENTRY_POINT_GROUP!r} entry-point group or {TRANSFORMS_ENV}=name=module:function)"
        )
    return name, _resolve(name, registry[name])


def check_transform_name(value: str) -> str:
    """Pydantic validator for the ``transform`` parameter: a registered name, stripped."""
    return load_transform(value)[0]
