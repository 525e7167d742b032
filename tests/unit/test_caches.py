"""Process-wide caches live in runtime/caches.py, each named there, and clear_all empties them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prefect_s3_concurrency.runtime import caches
from prefect_s3_concurrency.s3.connection import S3Connection, get_session
from prefect_s3_concurrency.s3.regions import known_region, remember_region
from prefect_s3_concurrency.transforms import registry

ROOT = Path(__file__).resolve().parents[2]
# Process state that is not a cache (the caches module's docstring says where it lives).
NOT_CACHES = {"_received", "_secrets", "_earlier_attempts"}
EMPTY_CONTAINERS = {"set", "dict", "list", "Counter", "defaultdict", "OrderedDict"}


def _empty_container(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Call):
        return ast.unparse(value.func).split(".")[-1] in EMPTY_CONTAINERS and not value.args
    return isinstance(value, ast.Dict) and not value.keys or (
        isinstance(value, (ast.List, ast.Set)) and not value.elts
    )


def _module_level_containers(path: Path) -> set[str]:
    """Names a module binds, at its top level, to a new empty set, dict, list or Counter."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and _empty_container(node.value):
            found |= {ast.unparse(t) for t in node.targets}
        elif isinstance(node, ast.AnnAssign) and _empty_container(node.value):
            found.add(ast.unparse(node.target))
    return found


def test_caches_are_declared_only_in_the_caches_module() -> None:
    stray = {}
    for folder in ["src", "flows", "tasks", "deployments"]:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "caches.py":
                continue
            text = path.read_text()
            names = _module_level_containers(path) - NOT_CACHES
            if names or re.search(r"lru_cache|functools\.cache\b|import cache\b", text):
                stray[str(path.relative_to(ROOT))] = sorted(names)
    assert stray == {}


def test_every_cache_is_named_and_clear_all_empties_it() -> None:
    doc = caches.__doc__ or ""
    for name in caches.cached_names():  # modules with cached functions, imported above
        assert name.removeprefix("prefect_s3_concurrency.").rsplit(".", 1)[0] in doc, name
    for learned in ["IGNORES_RANGE", "PARTIAL_AS_200", "CRC_REFUSED", "CRC_ECHOED"]:
        assert f"``{learned}``" in doc
        getattr(caches, learned).add("http://127.0.0.1:1")
    remember_region("http://127.0.0.1:1", "bkt", "eu-west-1")
    caches.VERIFY_REQUESTS["head"] += 1
    session = get_session(S3Connection())
    registry.registered_transforms()
    assert registry._entry_points.cache_info().currsize == 1  # type: ignore[attr-defined]
    caches.clear_all()
    assert not caches.IGNORES_RANGE | caches.PARTIAL_AS_200 | caches.CRC_REFUSED
    assert not caches.CRC_ECHOED and not caches.VERIFY_REQUESTS
    assert known_region("http://127.0.0.1:1", "bkt") is None
    assert registry._entry_points.cache_info().currsize == 0  # type: ignore[attr-defined]
    assert get_session(S3Connection()) is not session
