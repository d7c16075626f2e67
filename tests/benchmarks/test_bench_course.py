"""benchmarks/: the busy core is really busy and always stopped; the course table judges against course_map."""
import sys
import time
from pathlib import Path

import nbformat
import pytest

from lora_edu.course import course_map

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_common  # noqa: E402
import bench_course  # noqa: E402


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_busy_core_spins_and_is_killed_when_the_block_ends_even_by_an_exception():
    with pytest.raises(RuntimeError):
        with bench_common.busy_core(limit_s=120) as pid:
            start_cpu, deadline = _cpu_seconds(pid), time.monotonic() + 60
            while _cpu_seconds(pid) - start_cpu < 0.3 and time.monotonic() < deadline:
                time.sleep(0.1)  # a sleeping process would never get there; a spinning one does even on a loaded machine
            assert _cpu_seconds(pid) - start_cpu >= 0.3
            raise RuntimeError("measurement failed")
    assert not _alive(pid)


def test_busy_core_stops_by_itself_at_its_time_limit():
    with bench_common.busy_core(limit_s=0.1) as pid:
        time.sleep(2.0)
        assert not _alive(pid)


def test_busy_core_disabled_starts_nothing():
    with bench_common.busy_core(enabled=False) as pid:
        assert pid is None


def test_the_course_summary_judges_medians_against_the_course_map():
    names = [ch.notebook for ch in course_map.COURSE_MAP]
    raw = {name: [10.0, 12.0, 11.0] for name in names}
    raw[names[4]] = [20.0, 95.0, 40.0]  # one disturbed run: the median (40 s) is over, not 3x over
    summary = bench_course.summarize(raw, whole_course=True)
    assert summary["notebooks"][names[0]] == dict(budget_s=30.0, min=10.0, median=11.0, verdict="ok")
    assert summary["notebooks"][names[4]]["verdict"] == "over"
    course, others = summary["course"], len(names) - 1
    assert course["sum_of_min"] == others * 10.0 + 20.0 and course["sum_of_median"] == others * 11.0 + 40.0
    extra = len(names) - course_map.COURSE_BUDGET_BASE_NOTEBOOKS  # notebooks after 06 add their share
    assert course["budget_s"] == course_map.course_budget_s() == 120.0 + 30.0 * extra and course["verdict"] == "ok"
    assert course["rounds"] == [others * 10.0 + 20.0, others * 12.0 + 95.0, others * 11.0 + 40.0]
    assert "course (sums)" in bench_course.table(summary, bench_common.machine_info(), 3, busy=False)


def test_a_subset_of_notebooks_is_not_judged_as_the_course():
    summary = bench_course.summarize({"02_worked_example.ipynb": [5.0]}, whole_course=False)
    assert summary["course"]["budget_s"] is None and summary["course"]["verdict"].startswith("not judged")


@pytest.mark.slow
def test_execute_copy_runs_a_notebook_without_writing_it(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("open('made_here.txt', 'w').write('x')")])
    source = tmp_path / "tiny.ipynb"
    nbformat.write(nb, source)
    before = source.read_bytes()
    work = tmp_path / "copy"
    work.mkdir()
    run, teardown = bench_course.execute_copy(source, work)
    assert run > 0 and teardown >= 0
    assert source.read_bytes() == before  # outputs were not written back
    assert (work / "made_here.txt").exists()  # the notebook ran in the folder it was given
