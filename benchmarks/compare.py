"""Another revision of the project as an extra contender in the same run (an A/B).

``--compare-to REV`` extracts ``src/prefect_s3_concurrency`` at ``REV`` (``git archive``)
into a temporary directory as the package ``psc_<rev>``, its own imports rewritten to that
name, so both versions run in one process, interleaved round by round, under the same
Prefect API and the same load. Its contenders are labelled ``<engine> w<N> @<rev>``.
"""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

PACKAGE = "prefect_s3_concurrency"
REPO = Path(__file__).resolve().parent.parent


def load_revision(rev: str, into: Path) -> str:
    """Import the project's package as of ``rev`` under a name of its own; return the name.

    Its folders are laid out as ``pyproject.toml``'s ``[tool.setuptools.package-dir]`` (at
    ``rev``) maps them (``flows/`` becomes ``<package>.flows`` and so on).
    """

    def git(*args: str) -> bytes:
        run = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True)
        return run.stdout

    short = git("rev-parse", "--short", rev).decode().strip()
    name = f"psc_{short}"
    config = tomllib.loads(git("show", f"{rev}:pyproject.toml").decode())
    dirs: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    with tarfile.open(fileobj=io.BytesIO(git("archive", rev, *dirs.values()))) as tar:
        tar.extractall(into / "archive", filter="data")
    for package, folder in sorted(dirs.items()):  # the package first, its sub-packages next
        target = into / name / package.removeprefix(PACKAGE).lstrip(".").replace(".", "/")
        shutil.move(into / "archive" / folder, target)
    for py in (into / name).rglob("*.py"):
        py.write_text(py.read_text().replace(PACKAGE, name))
    sys.path.insert(0, str(into))
    importlib.import_module(name)
    return name


def module(package: str, path: str) -> ModuleType:
    """``<package>.<path>``: this checkout's package by default, or a loaded revision."""
    return importlib.import_module(f"{package or PACKAGE}.{path}")


def connection_for(package: str, conn: Any) -> Any:
    """``conn`` as the ``S3Connection`` class of ``package`` (flows validate its type)."""
    cls = module(package, "s3.connection").S3Connection
    return conn if isinstance(conn, cls) else cls.model_validate(conn.model_dump())
