"""The package's promises: its public names, and a dependency declared for every import."""

from __future__ import annotations

import ast
import graphlib
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import prefect_s3_concurrency

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ["src", "flows", "tasks", "deployments"]
PUBLIC = {
    "ConfigurationError", "PipelineFailed", "PipelineSummary", "S3Connection", "S3PipelineError",
    "TransferFailed", "TransferSummary", "__version__", "download_prefix", "square_objects",
    "upload_directory",
}  # fmt: skip


def test_public_names_are_pinned_and_import() -> None:
    assert set(prefect_s3_concurrency.__all__) >= PUBLIC  # removing one breaks users
    for name in prefect_s3_concurrency.__all__:
        assert getattr(prefect_s3_concurrency, name) is not None
    assert (ROOT / "src/prefect_s3_concurrency/py.typed").is_file()


def _top_level_imports() -> set[str]:
    names: set[str] = set()
    for folder in PACKAGE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"prefect_s3_concurrency", "__future__"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["dask"]]
    names = (re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0] for spec in specs)
    return {name.lower().replace("_", "-") for name in names}


def test_every_direct_import_is_a_declared_dependency() -> None:
    """A module the package imports must not arrive only as some other package's dependency."""
    dists = packages_distributions()
    missing = {}
    for module in sorted(_top_level_imports()):
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not owners & _declared():
            missing[module] = sorted(owners)
    assert missing == {}


def test_library_modules_import_without_prefect_flows() -> None:
    """Library capabilities (s3, local, transforms, runtime) never import the flows or the CLI."""
    for folder in ["s3", "local", "transforms", "runtime"]:
        for path in (ROOT / "src/prefect_s3_concurrency" / folder).rglob("*.py"):
            text = path.read_text()
            assert "prefect_s3_concurrency.flows" not in text, path
            assert "prefect_s3_concurrency.cli" not in text, path
            module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
            importlib.import_module(module.removesuffix(".__init__"))


FOLDER_PACKAGES = {"src/prefect_s3_concurrency": "prefect_s3_concurrency"} | {
    d: f"prefect_s3_concurrency.{d}" for d in ["flows", "tasks", "deployments"]
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDER_PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join([package, *parts]).removesuffix(".__init__")] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement names (relative ones resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
        base = ".".join([*parts, base] if base else parts)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def _skipped(node: ast.AST) -> bool:
    """Blocks that are not imports of the module: ``TYPE_CHECKING`` and the script entry."""
    test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
    return "TYPE_CHECKING" in test or test == "__name__ == '__main__'"


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if _skipped(node):
                node.body = []  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def test_no_import_circle() -> None:
    """No module imports (even lazily, inside a function) one that imports it back.

    A ``python flows/transfer.py`` entry block runs as ``__main__``, another module, so it
    does not count; nor do imports only for type checkers.
    """
    list(graphlib.TopologicalSorter(_import_graph()).static_order())  # raises CycleError
