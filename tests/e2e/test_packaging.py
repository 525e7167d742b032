"""A non-editable install ships one namespaced import package with its public API and types."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import prefect_s3_concurrency

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("prefect_s3_concurrency-*.whl")
    return found


def test_wheel_holds_exactly_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"prefect_s3_concurrency"}
    assert "prefect_s3_concurrency/py.typed" in names
    for sub in ("flows/transfer.py", "s3/transfer.py", "tasks/s3.py", "deployments/serve.py"):
        assert f"prefect_s3_concurrency/{sub}" in names
    assert not [n for n in names if "/tests/" in n or "benchmarks" in n or "conftest" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "prefect-s3 = prefect_s3_concurrency.cli:main" in text


def test_installed_copy_imports_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    code = (
        "import prefect_s3_concurrency as p, prefect_s3_concurrency.flows.transfer as t\n"
        "from prefect_s3_concurrency import download_prefix, upload_directory, square_objects,"
        " S3Connection, TransferSummary\n"
        "print(p.__file__); print(t.__file__); print(download_prefix.name)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, second, name = done.stdout.split()
    assert first.startswith(str(target)) and second.startswith(str(target))
    assert name == "download-prefix"


def test_public_api_is_declared() -> None:
    public = set(prefect_s3_concurrency.__all__)
    assert {"download_prefix", "upload_directory", "square_objects", "S3Connection"} <= public
    for name in public:
        assert getattr(prefect_s3_concurrency, name) is not None


def test_every_error_derives_from_one_root() -> None:
    import importlib
    import inspect
    import pkgutil

    root = prefect_s3_concurrency.S3PipelineError
    strays = []
    names = []
    for sub in ("flows", "tasks", "deployments"):
        package = importlib.import_module(f"prefect_s3_concurrency.{sub}")
        names += [i.name for i in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")]
    for info_name in names:
        module = importlib.import_module(info_name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == module.__name__
                and not issubclass(obj, root)
            ):
                strays.append(f"{module.__name__}.{name}")
    assert not strays, f"exceptions outside the S3PipelineError hierarchy: {strays}"
