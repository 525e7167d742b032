"""Planning, scratch and timing helpers of the pipeline, and the CPU-stage task wrappers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from prefect_s3_concurrency.errors import ConfigurationError
from prefect_s3_concurrency.local.paths import parse_s3_url
from prefect_s3_concurrency.s3.transfer import S3Object
from prefect_s3_concurrency.tasks.cpu import (
    ChunkFailed,
    ChunkReport,
    current_api_url,
    flow_api_url,
    shared_api_settings,
    square_chunk,
)
from prefect_s3_concurrency.transforms.planning import (
    MIB,
    Chunk,
    ScratchBudget,
    StageClock,
    check_disjoint,
    choose_mode,
    plan_work,
    plan_work_chunks,
    union_seconds,
)


def _objects(sizes: dict[str, int]) -> list[S3Object]:
    return [S3Object(key, size, "etag") for key, size in sizes.items()]


def test_plan_work_numbers_scratch_files_and_maps_keys(tmp_path: Path) -> None:
    objects = _objects({"in/a.txt": 5, "in/sub/ü b.txt": 7, "in/../x": 1, "in/a//b": 1})
    objects.append(S3Object("in/" + "n" * 200 + "/" + "m" * 200, 3))
    items, rejected = plan_work(objects, "in/", parse_s3_url("s3://out-b/" + "p" * 700), tmp_path)
    assert set(rejected) == {"in/../x", "in/a//b", objects[-1].key}
    assert "1024 bytes" in rejected[objects[-1].key]
    items, _ = plan_work(objects[:2], "in/", parse_s3_url("s3://out-b/res"), tmp_path)
    assert [i.dest_key for i in items] == ["res/a.txt", "res/sub/ü b.txt"]
    assert [i.input_path for i in items] == [str(tmp_path / "in" / f"{n:07d}") for n in (0, 1)]
    assert [Path(i.output_path).parent for i in items] == [tmp_path / "out"] * 2


@pytest.mark.parametrize(
    ("source", "dest", "overlaps"),
    [
        ("s3://bkt/in", "s3://bkt/in/out", True),
        ("s3://bkt/in/", "s3://bkt/in", True),
        ("s3://bkt", "s3://bkt/out", True),
        ("s3://bkt/data/out", "s3://bkt/data", True),
        ("s3://bkt/in", "s3://bkt/input", False),
        ("s3://bkt/in", "s3://other/in", False),
    ],
)
def test_check_disjoint(source: str, dest: str, overlaps: bool) -> None:
    if overlaps:
        with pytest.raises(ConfigurationError, match="overlaps source"):
            check_disjoint(parse_s3_url(source), parse_s3_url(dest))
    else:
        check_disjoint(parse_s3_url(source), parse_s3_url(dest))


def _items(tmp_path: Path, sizes: list[int]):
    objects = _objects({f"k{i:03d}": s for i, s in enumerate(sizes)})
    return plan_work(objects, "", parse_s3_url("s3://out-b/o"), tmp_path)[0]


def test_chunks_a_few_per_worker_but_not_tiny(tmp_path: Path) -> None:
    items = _items(tmp_path, [10 * MIB] * 40)  # 400 MiB
    chunks = plan_work_chunks(items, 2, 4, 16 * MIB, 10**6 * MIB)
    assert len(chunks) == 8  # cpu_workers * chunks_per_worker
    assert sorted(i.key for c in chunks for i in c.items) == sorted(i.key for i in items)
    assert max(c.input_bytes for c in chunks) - min(c.input_bytes for c in chunks) <= 10 * MIB
    small = plan_work_chunks(items[:4], 2, 4, 16 * MIB, 10**6 * MIB)
    assert len(small) == 3  # ceil(40 MiB / 16 MiB): objects are never split
    assert plan_work_chunks([], 2, 4, 1, 1) == []
    empty_objects = plan_work_chunks(_items(tmp_path, [0, 0, 0]), 2, 4, 1, 1)
    assert len(empty_objects) == 1 and len(empty_objects[0].items) == 3


def test_chunks_shrink_so_workers_plus_one_fit_in_scratch(tmp_path: Path) -> None:
    items = _items(tmp_path, [MIB] * 60)
    chunks = plan_work_chunks(items, 2, 4, 16 * MIB, 30 * MIB)
    assert len(chunks) > 8
    assert sum(sorted(c.scratch_estimate for c in chunks)[-3:]) <= 30 * MIB
    assert chunks[0].scratch_estimate == 3 * chunks[0].input_bytes


def test_choose_mode_threshold() -> None:
    use, why = choose_mode(10 * MIB, 2, 128 * MIB)
    assert not use and "below min_process_mib=128" in why and "flow process" in why
    use, why = choose_mode(128 * MIB, 2, 128 * MIB)
    assert use and "2 worker process(es)" in why
    assert choose_mode(0, 2, 0)[0]


def test_scratch_budget_bounds_and_peak() -> None:
    budget = ScratchBudget(100)
    assert budget.fits(500)  # nothing in flight: an oversized chunk may still run alone
    budget.hold(0, 500)
    assert not budget.fits(1)
    budget.hold(0, 60)  # measured output replaces the estimate
    assert budget.fits(40) and not budget.fits(41)
    budget.hold(1, 40)
    budget.release(0)
    assert budget.used == 40 and budget.peak == 500


def test_union_seconds_and_stage_clock() -> None:
    assert union_seconds([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == pytest.approx(4.0)
    assert union_seconds([]) == 0.0
    clock = StageClock(origin=100.0)
    clock.add("download", 102.0, 1.5)
    clock.add("download", 103.0, 2.0)
    clock.add("square", 104.0, 10.0)  # clipped at the origin
    assert clock.busy("download") == pytest.approx(2.5)
    assert clock.span("download") == (pytest.approx(0.5), pytest.approx(3.0))
    assert clock.span("square") == (0.0, 4.0)
    assert clock.span("upload") is None and clock.busy("upload") == 0.0


def test_square_chunk_task_reports_pid_and_api(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_bytes(b"-12\r\n0\n")
    jobs = [("b/in.txt", str(src), str(tmp_path / "out.txt")), ("b/missing", "/nope", "/nope2")]
    with pytest.raises(ChunkFailed) as failed:  # the task run shows Failed in the UI
        square_chunk.fn(jobs, "square")
    report = failed.value.report
    assert isinstance(report, ChunkReport)
    assert report.result.pid == os.getpid()
    assert (tmp_path / "out.txt").read_bytes() == b"144\n0\n"
    assert list(report.result.failed) == ["b/missing"]
    assert report.api_url == current_api_url()


def test_shared_api_settings_pins_the_flows_server() -> None:
    """Emulate ephemeral mode: the flow's client has a URL that the settings do not."""

    @flow
    def probe() -> tuple[str | None, str | None, str | None, str | None]:
        flow_url = flow_api_url()
        with temporary_settings(restore_defaults={PREFECT_API_URL}):
            before = current_api_url()
            with shared_api_settings() as pinned:
                env = get_current_settings().to_environment_variables(exclude_unset=True)
                inside = env.get("PREFECT_API_URL", "").rstrip("/")
            after = current_api_url()
        return flow_url, before, pinned, inside, after

    flow_url, before, pinned, inside, after = probe()
    assert flow_url and flow_url.startswith("http://127.0.0.1:")
    assert before is None and after is None
    assert pinned == inside == flow_url
    with shared_api_settings() as outside:  # outside a flow: whatever is configured
        assert outside == current_api_url()


def test_chunk_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Chunk(0, ()).index = 1  # type: ignore[misc]
