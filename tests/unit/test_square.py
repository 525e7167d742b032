"""Tests for transforms.square: the Prefect-free squaring core (no Prefect, no S3)."""

from __future__ import annotations

import os
import pickle
import random
import re
import sys
import threading
from pathlib import Path

import pytest

from prefect_s3_concurrency.transforms.registry import TRANSFORMS_ENV
from prefect_s3_concurrency.transforms.square import (
    BadLineError,
    ChunkResult,
    FileStats,
    TransformError,
    TransformImportError,
    estimate_cpu_seconds,
    load_transform,
    plan_chunks,
    square,
    transform_file,
    transform_files,
    unlimited_int_digits,
)


@pytest.fixture
def prefect_harness() -> None:
    """Override the suite's autouse Prefect server: this module never touches Prefect."""


def _run(tmp_path: Path, data: bytes, transform: str = "square") -> tuple[bytes, FileStats]:
    src, dst = tmp_path / "in.txt", tmp_path / "out" / "in.txt"
    src.write_bytes(data)
    stats = transform_file(src, dst, transform, key="bucket/in.txt")
    return dst.read_bytes(), stats


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _big(digits: int, seed: int) -> int:
    rnd = random.Random(seed)
    text = str(rnd.randint(1, 9)) + "".join(rnd.choices("0123456789", k=digits - 1))
    with unlimited_int_digits():
        return int(text)


def _dec(n: int) -> bytes:
    with unlimited_int_digits():
        return str(n).encode()


# --------------------------------------------------------------------------- happy paths


def test_exact_squares_with_signs_zero_and_padding(tmp_path: Path) -> None:
    values = [b"0", b"-0", b"+5", b"-7", b"12", b"007", b"-123456789012345678901234567890"]
    out, stats = _run(tmp_path, b"\n".join(values) + b"\n")
    expected = [b"%d" % (int(v) * int(v)) for v in values]
    assert out.split(b"\n") == [*expected, b""]
    assert out.startswith(b"0\n0\n25\n49\n144\n49\n")
    assert stats == FileStats("bucket/in.txt", stats.input_bytes, len(out), 7, stats.seconds)
    assert stats.input_bytes == sum(len(v) + 1 for v in values)


@pytest.fixture
def int_square(tmp_path: Path, monkeypatch) -> str:
    """A custom transform equal to square but forced through the plain-int path."""
    (tmp_path / "sq_int_mod.py").write_text("def sq(n):\n    return n * n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRANSFORMS_ENV, "sq_int=sq_int_mod:sq")
    return "sq_int"


@pytest.mark.parametrize("path", ["builtin", "int"])
@pytest.mark.parametrize("digits", [1_000, 50_000])
def test_huge_integers_beyond_default_digit_limit(
    tmp_path: Path, int_square: str, digits: int, path: str
) -> None:
    a, b = _big(digits, 1), -_big(digits, 2)
    before = sys.get_int_max_str_digits()
    spec = "square" if path == "builtin" else int_square
    out, stats = _run(tmp_path, _dec(a) + b"\n \t" + _dec(b) + b"\t\r\n", spec)
    assert out == _dec(a * a) + b"\n" + _dec(b * b) + b"\n"
    assert stats.numbers == 2
    assert sys.get_int_max_str_digits() == before  # limit restored afterwards


def test_both_paths_agree_around_threshold(tmp_path: Path, int_square: str) -> None:
    rnd = random.Random(11)
    values = [rnd.choice([-1, 1]) * _big(d, d) for d in range(150, 260, 3)]
    lines = [_dec(v) for v in values] + [b"-" + b"0" * 400, b"+" + b"0" * 300 + b"7"]
    lines += [b"0" * 250, b"-" + b"0" * 299 + b"12", b"+" + b"9" * 300]
    data = b"\r\n".join(lines)
    expected = b"".join(_dec(int(x) ** 2) + b"\n" for x in lines)
    assert _run(tmp_path, data)[0] == expected
    assert _run(tmp_path, data, int_square)[0] == expected


def test_empty_file_gives_empty_output(tmp_path: Path) -> None:
    out, stats = _run(tmp_path, b"")
    assert out == b""
    assert (stats.numbers, stats.input_bytes, stats.output_bytes) == (0, 0, 0)


def test_crlf_no_trailing_newline_and_surrounding_blanks(tmp_path: Path) -> None:
    out, stats = _run(tmp_path, b"3\r\n \t-4 \r\n+5\t\n6")
    assert out == b"9\n16\n25\n36\n"
    assert stats.numbers == 4


def test_custom_transform_registered_by_configuration(tmp_path: Path, monkeypatch) -> None:
    mod = tmp_path / "sq_custom_mod.py"
    mod.write_text(
        "def cube(n):\n    return n ** 3\nclass K:\n    @staticmethod\n    def neg(n):\n"
        "        return -n\nNOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRANSFORMS_ENV, "cube3=sq_custom_mod:cube, neg=sq_custom_mod:K.neg")
    name, fn = load_transform("cube3")
    assert name == "cube3" and fn(3) == 27
    assert load_transform("neg")[1](4) == -4
    out, _ = _run(tmp_path, b"2\n-3\n", "cube3")
    assert out == b"8\n-27\n"


def test_builtin_transform() -> None:
    assert load_transform("square") == ("square", square)
    assert square(-12) == 144


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "lineno", "fragment"),
    [
        (b"1\n2\nabc\n", 3, "'abc'"),
        (b"1_000\n", 1, "'1_000'"),
        (b"4\n1.5\n", 2, "'1.5'"),
        (b"1\n\n2\n", 2, "blank line"),
        (b"1\n \t\r\n2\n", 2, "blank line"),
        (b"1\n2\n\n", 3, "blank line"),
        (b"\n", 1, "blank line"),
        (b"--1\n", 1, "'--1'"),
        (b"+\n", 1, "'+'"),
        (b"1 2\n", 1, "'1 2'"),
        (b"5\r\r\n", 1, "'5\\r'"),
        ("\u0661\u0662\n".encode(), 1, "not an integer"),  # Arabic-Indic digits
        (b"0x10\n", 1, "'0x10'"),
    ],
)
def test_bad_lines_fail_cleanly(tmp_path: Path, data: bytes, lineno: int, fragment: str) -> None:
    src, out_dir = tmp_path / "in.txt", tmp_path / "out"
    out_dir.mkdir()
    src.write_bytes(data)
    with pytest.raises(BadLineError) as info:
        transform_file(src, out_dir / "res.txt", key="bucket/data/x.txt")
    err = info.value
    assert (err.key, err.lineno) == ("bucket/data/x.txt", lineno)
    msg = str(err)
    assert "\n" not in msg and f"bucket/data/x.txt: line {lineno}:" in msg and fragment in msg
    assert _leftovers(out_dir) == []  # neither dst nor a .partial temp file


def test_bad_line_snippet_is_truncated(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"x" * 100_000 + b"\n")
    with pytest.raises(BadLineError) as info:
        transform_file(src, tmp_path / "out.txt")
    assert len(str(info.value)) < 200 and info.value.key == str(src)
    assert info.value.text.endswith("...")


def test_failure_keeps_existing_dst_untouched(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(b"1\nnope\n")
    dst.write_bytes(b"old\n")
    with pytest.raises(BadLineError):
        transform_file(src, dst)
    assert dst.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_bad_line_error_pickles() -> None:
    err = BadLineError("b/k.txt", 7, "1_000", "not an integer")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is BadLineError and str(back) == str(err)
    assert (back.key, back.lineno, back.text, back.reason) == ("b/k.txt", 7, "1_000", err.reason)


@pytest.mark.parametrize(
    ("spec", "exc", "fragment"),
    [
        ("nope", TransformError, "not a registered transform"),
        ("a.b", TransformError, "not a registered transform"),
        ("mod:", TransformError, "not a registered transform"),
        (":f", TransformError, "not a registered transform"),
        ("a b:c", TransformError, "not a registered transform"),
        ("os:_exit", TransformError, "not a registered transform"),
        ("gone", TransformImportError, "cannot import"),
        ("noattr", TransformError, "no attribute"),
        ("notcallable", TransformError, "not callable"),
    ],
)
def test_load_transform_errors(
    spec: str, exc: type[Exception], fragment: str, monkeypatch
) -> None:
    monkeypatch.setenv(
        TRANSFORMS_ENV,
        "gone=no_such_module_xyz_123:f,noattr=os.path:no_such_function,notcallable=sys:maxsize",
    )
    with pytest.raises(exc) as info:
        load_transform(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)
    back = pickle.loads(pickle.dumps(info.value))
    assert str(back) == str(info.value)


def test_import_error_is_also_import_error(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sq_broken_mod.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRANSFORMS_ENV, "broken=sq_broken_mod:f,missing=no_such_module_xyz:f")
    with pytest.raises(ImportError, match="no_such_dependency_xyz"):
        load_transform("broken")
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        load_transform("missing")


def test_transform_returning_non_int_fails(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sq_float_mod.py").write_text("def half(n):\n    return n / 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRANSFORMS_ENV, "half=sq_float_mod:half")
    with pytest.raises(TransformError, match=r"line 1: .*returned float, not int"):
        _run(tmp_path, b"3\n", "half")
    assert _leftovers(tmp_path / "out") == []


# --------------------------------------------------------------------------- chunks


def test_transform_files_isolates_bad_objects(tmp_path: Path) -> None:
    jobs = []
    for key, data in [("a", b"1\n2\n"), ("bad", b"3\nx\n"), ("c", b"-4"), ("gone", None)]:
        src = tmp_path / "in" / key
        src.parent.mkdir(exist_ok=True)
        if data is not None:
            src.write_bytes(data)
        jobs.append((key, str(src), str(tmp_path / "out" / key)))
    result = transform_files(jobs)
    assert [s.key for s in result.ok] == ["a", "c"]
    assert set(result.failed) == {"bad", "gone"}
    assert "bad: line 2" in result.failed["bad"]
    assert "FileNotFoundError" in result.failed["gone"]
    assert result.pid == os.getpid() and result.seconds >= 0
    assert (result.input_bytes, result.numbers) == (6, 3)
    assert _leftovers(tmp_path / "out") == ["a", "c"]
    assert (tmp_path / "out" / "c").read_bytes() == b"16\n"
    back = pickle.loads(pickle.dumps(result))
    assert back == result and isinstance(back, ChunkResult)


def test_transform_files_bad_spec_fails_whole_chunk(tmp_path: Path) -> None:
    with pytest.raises(TransformError):
        transform_files([("a", str(tmp_path / "a"), str(tmp_path / "b"))], "nope")


def test_digit_limit_context_is_reentrant_across_threads() -> None:
    before = sys.get_int_max_str_digits()
    barrier = threading.Barrier(4)

    def work() -> None:
        with unlimited_int_digits():
            barrier.wait()
            assert len(str(10**6000)) == 6001

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.get_int_max_str_digits() == before


# --------------------------------------------------------------------------- planning


def _check_plan(sizes: list[tuple[str, int]], chunks: list[list[str]]) -> list[int]:
    flat = [k for chunk in chunks for k in chunk]
    assert sorted(flat) == sorted(k for k, _ in sizes)  # every key exactly once
    assert all(chunks)
    size = dict(sizes)
    loads = [sum(size[k] for k in chunk) for chunk in chunks]
    assert loads == sorted(loads, reverse=True)
    return loads


def test_plan_chunks_balanced_and_deterministic() -> None:
    rnd = random.Random(7)
    sizes = [(f"k{i:03d}", rnd.randint(1, 10_000_000)) for i in range(300)]
    chunks = plan_chunks(sizes, target_bytes=50_000_000)
    loads = _check_plan(sizes, chunks)
    total = sum(s for _, s in sizes)
    assert len(chunks) == -(-total // 50_000_000)
    assert max(loads) <= total / len(chunks) + max(s for _, s in sizes)
    assert max(loads) - min(loads) <= 10_000_000
    assert plan_chunks(list(reversed(sizes)), 50_000_000) == chunks


def test_plan_chunks_max_chunks_and_lpt() -> None:
    sizes = [(f"f{i}", s) for i, s in enumerate([7, 7, 6, 6, 5, 5, 4, 4, 4])]
    chunks = plan_chunks(sizes, target_bytes=1, max_chunks=3)
    assert len(chunks) == 3
    assert _check_plan(sizes, chunks) == [16, 16, 16]
    many = [(f"x{i}", 10) for i in range(100)]
    assert len(plan_chunks(many, target_bytes=1, max_chunks=8)) == 8
    assert _check_plan(many, plan_chunks(many, 1, 8)) == [130] * 4 + [120] * 4


def test_plan_chunks_edge_cases() -> None:
    assert plan_chunks([], 100) == []
    assert plan_chunks([], 100, max_chunks=4) == []
    assert plan_chunks([("a", 5), ("b", 0), ("c", 0)], 100) == [["a", "b", "c"]]
    assert plan_chunks([("zero1", 0), ("zero2", 0)], 10, max_chunks=2) == [["zero1", "zero2"]]
    # never more chunks than objects, one huge object stays whole
    assert plan_chunks([("big", 10**9), ("s", 1)], 10) == [["big"], ["s"]]
    for bad in ([("a", 1), ("a", 2)], [("a", -1)]):
        with pytest.raises(ValueError):
            plan_chunks(bad, 10)
    with pytest.raises(ValueError):
        plan_chunks([("a", 1)], 0)
    with pytest.raises(ValueError):
        plan_chunks([("a", 1)], 10, max_chunks=0)


def test_estimate_cpu_seconds() -> None:
    assert estimate_cpu_seconds(0) == 0
    assert 0 < estimate_cpu_seconds(100_000_000) < 100
    assert estimate_cpu_seconds(10_000_000, mb_per_second=10) == pytest.approx(1.0)


def test_results_pickle() -> None:
    stats = FileStats("k", 10, 20, 3, 0.5)
    assert pickle.loads(pickle.dumps(stats)) == stats
    res = ChunkResult([stats], {"bad": "bad: line 1: blank line: ''"}, 123, 1.5)
    assert pickle.loads(pickle.dumps(res)) == res


def test_module_has_no_prefect_import() -> None:
    for module in (square.__module__, transform_file.__module__):  # transforms, square
        source = Path(sys.modules[module].__file__).read_text()
        assert not re.search(r"^\s*(import|from)\s+prefect[.\s]", source, re.MULTILINE)


def test_chunk_runs_in_spawned_worker_with_custom_transform(tmp_path: Path, monkeypatch) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    (tmp_path / "sq_spawn_mod.py").write_text("def plus_one_squared(n):\n    return (n + 1) ** 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(TRANSFORMS_ENV, "plus1sq=sq_spawn_mod:plus_one_squared")  # inherited
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_bytes(b"1\n-1\n")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        jobs = [("k", str(src), str(dst))]
        result = pool.submit(transform_files, jobs, "plus1sq").result(30)
    assert result.pid != os.getpid()
    assert [s.key for s in result.ok] == ["k"] and not result.failed
    assert dst.read_bytes() == b"4\n0\n"


def test_writes_via_hidden_partial_then_replaces(tmp_path: Path, monkeypatch) -> None:
    spy = "import os\nSEEN = []\ndef spy(n):\n    SEEN.extend(os.listdir(os.environ['SQ_SPY']))\n"
    (tmp_path / "sq_spy_mod.py").write_text(spy + "    return n\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SQ_SPY", str(tmp_path / "out"))
    monkeypatch.setenv(TRANSFORMS_ENV, "spy=sq_spy_mod:spy")
    out, _ = _run(tmp_path, b"5\n", "spy")
    import sq_spy_mod

    (partial,) = sq_spy_mod.SEEN
    assert partial.startswith(".in.txt.") and partial.endswith(".partial")
    assert out == b"5\n" and _leftovers(tmp_path / "out") == ["in.txt"]
