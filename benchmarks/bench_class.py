"""How big a class one server holds: student servers running notebook 02 until the machine is full, and grading 100.

    sudo .venv/bin/python benchmarks/bench_class.py                      # both parts; writes lora_edu/data/bench_class.json
    sudo .venv/bin/python benchmarks/bench_class.py --max-servers 3 --grade-students 6 --repeats 1 --out /tmp/bench_class.json

Part 1, servers (as root: it creates system users ``lehub-s001``... and removes them at the end). It sets up a class
exactly as deploy/ does (install_class.py, start_hub.sh: JupyterHub with configurable-http-proxy on 127.0.0.1, PAM
users) and then, one student after another, logs in through the hub, starts the student's server and runs every
code cell of notebook 02 in a kernel that stays open, as a class does while everyone works. For each student it
records the seconds from "start my server" to a server that answers, the seconds notebook 02 took, the CPU time all
the student's processes used for both (what a busy machine cannot shrink: the basis of "students per core"), the
memory of all the student's processes (PSS, so shared libraries are split between the processes that share them)
and the memory the machine still had available. It stops at the first of: ``--max-servers``; less than
``--reserve-gib`` available; a server that does not start within ``--start-timeout`` s; notebook 02 slower
than ``--run-timeout`` s. Why it stopped is in the result.

Part 2, grading: a class of ``--grade-students`` (100) handing in every notebook of the course (a third solved,
a third blank, a third wrong: benchmarks/bench_grading.py's class) graded by ``lora_edu.grade`` in its sandbox,
``--repeats`` rounds; min and median seconds, and students per minute.

The result names the machine and the load average before and after each part. A busy machine (other jobs on the
cores) makes every number worse: re-measure on a quiet one before quoting it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_common import load_average, machine_info, min_median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "deploy"))
import hub_driver as hd  # noqa: E402

OUT = ROOT / "lora_edu" / "data" / "bench_class.json"
SITE = Path("/srv/lehub-bench")
NOTEBOOK = ROOT / "notebooks" / "02_worked_example.ipynb"


def mem_available_gib() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def pss_mib(user: str) -> float:
    """The proportional set size of every process of ``user`` (its server and its kernels), MiB."""
    total = 0
    for pid in hd.processes_of(user):
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_seconds(user: str) -> float:
    """CPU time (user + system) used so far by every live process of ``user``: its server's start and its kernels' work."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in hd.processes_of(user):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14 and 15 of proc(5))
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def notebook_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in nb["cells"] if c["cell_type"] == "code"]


def servers(args) -> dict:
    hd.cleanup(SITE)
    SITE.mkdir(parents=True)
    os.chmod(SITE, 0o755)
    site = hd.ClassSite(SITE)
    instructor = f"{hd.PREFIX}-binstr"
    cells = notebook_cells(NOTEBOOK)
    rows, reason, hub = [], f"reached --max-servers {args.max_servers}", None
    load_before = load_average()
    try:
        hd.make_user(instructor)
        hd.install(site, instructor, [], hd.venv_for_students())
        hub = hd.Hub(site, Path(tempfile.mkdtemp(prefix="bench_class_")) / "hub.log")
        hub.start()
        for n in range(1, args.max_servers + 1):
            available = mem_available_gib()
            if available < args.reserve_gib:
                reason = f"{available:.1f} GiB available, under the --reserve-gib {args.reserve_gib:g} kept for the system and the hub"
                break
            name = f"{hd.PREFIX}-s{n:03d}"
            student = hd.Student(hub, name, hd.make_user(name))
            hd.add_students(site, [name])
            assert student.login().status_code == 302
            try:
                start_s = student.start_server(timeout=args.start_timeout)
            except TimeoutError:
                reason = f"server {n} did not start within {args.start_timeout:g} s"
                break
            kernel = student.start_kernel()
            t0 = time.monotonic()
            try:
                for code in cells:
                    out = student.execute(kernel, code, timeout=args.run_timeout)
                    if "ERROR " in out:
                        raise RuntimeError(f"notebook 02 failed in {name}'s kernel: {out[-500:]}")
            except TimeoutError:
                reason = f"notebook 02 took over {args.run_timeout:g} s in server {n}"
                break
            run_s = time.monotonic() - t0
            rows.append(dict(student=n, start_s=round(start_s, 2), notebook02_s=round(run_s, 2), pss_mib=round(pss_mib(name), 1),
                             cpu_s=round(cpu_seconds(name), 2),
                             mem_available_gib=round(mem_available_gib(), 2), load_average=load_average()))
            print(f"server {n}: started in {start_s:.1f} s, notebook 02 in {run_s:.1f} s, {rows[-1]['pss_mib']:.0f} MiB, "
                  f"{rows[-1]['mem_available_gib']:.1f} GiB left", flush=True)
    finally:
        if hub is not None:
            hub.stop_everything()
        hd.cleanup(SITE)
    pss = [r["pss_mib"] for r in rows]
    return dict(what="student servers (JupyterLab via jupyterhub-singleuser, LocalProcessSpawner) each keeping a kernel "
                     "that ran every code cell of notebook 02, started one after another",
                servers_held=len(rows), stopped_because=reason, per_server=rows,
                pss_mib=min_median(pss) if pss else None, start_s=min_median([r["start_s"] for r in rows]) if rows else None,
                notebook02_s=min_median([r["notebook02_s"] for r in rows]) if rows else None,
                cpu_s=min_median([r["cpu_s"] for r in rows]) if rows else None,
                reserve_gib=args.reserve_gib, load_average_before=load_before, load_average_after=load_average())


def grading(args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_grading import NOTEBOOKS, build_class

    from lora_edu.grade.grader import grade

    rounds, load = [], []
    with tempfile.TemporaryDirectory(prefix="bench_class_grading_") as tmp:
        course = build_class(Path(tmp) / "course", args.grade_students)
        for r in range(args.repeats):
            load.append(load_average())
            t0 = time.perf_counter()
            run = grade(course, "lora")
            rounds.append(time.perf_counter() - t0)
            print(f"grading round {r + 1}/{args.repeats}: {rounds[-1]:.1f} s for {args.grade_students} students, "
                  f"{len(run.marks)} cells", flush=True)
    seconds = min_median(rounds)
    return dict(what=f"grade {args.grade_students} students x {len(NOTEBOOKS)} notebooks (a third solved, blank, wrong), "
                     "python -m lora_edu.grade's sandbox, jobs = cores",
                students=args.grade_students, notebooks=len(NOTEBOOKS), repeats=args.repeats, raw_s=rounds, seconds=seconds,
                students_per_minute=round(args.grade_students / seconds["median"] * 60, 1), load_average_before_rounds=load)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("servers", "grading", "both"), default="both")
    parser.add_argument("--max-servers", type=int, default=200)
    parser.add_argument("--reserve-gib", type=float, default=2.0)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--grade-students", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.part != "grading" and os.geteuid() != 0:
        sys.exit("bench_class.py: the servers part creates system users and runs the hub: run it as root (or --part grading)")
    result = dict(machine=machine_info(), memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                  date=time.strftime("%Y-%m-%d"), command=" ".join(sys.argv))
    if args.part in ("servers", "both"):
        result["servers"] = servers(args)
    if args.part in ("grading", "both"):
        result["grading"] = grading(args)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
