"""What the course benchmarks share: a busy core on demand, a description of the machine, min/median, a timed step.

Used by ``bench_course.py``, ``bench_threads.py`` and the cache benchmarks (run as scripts from the repository root,
so this folder is on ``sys.path``).
"""
from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: The busy loop, as a separate Python process: spins until its deadline (argv[1], seconds), then exits.
_SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def busy_core(enabled: bool = True, limit_s: float = 1800.0):
    """Keep one core busy with another process while the ``with`` block runs (the issue's busy machine).

    The spinning process ends by itself after ``limit_s`` seconds, whatever happens to this one,
    and is killed when the block is left (normally, by an exception or by Ctrl-C). Yields its
    process id (``None`` when not ``enabled``).
    """
    if not enabled:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", _SPIN, str(limit_s)])
    try:
        time.sleep(0.2)  # let it start spinning before the measurement does
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks (the busy core's kill) run on ``kill <pid>`` too."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def cpu_name() -> str:
    """The CPU's model name where Linux tells it (platform.processor() is often empty there)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vector_flags() -> list[str]:
    """The CPU's widest vector instructions (avx2, avx512f, ...): two machines sold under one name ("AMD EPYC") can
    differ by these, and by 2x in the course's times (seen: AVX-512 against AVX2 only)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in set(flags) if f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"))


def matmul_gflops(size: int = 512, repeats: int = 5) -> float | None:
    """Single-thread float32 matmul speed (best of ``repeats``), so that timings from two machines can be compared."""
    try:
        import torch
    except ImportError:
        return None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(10):
                a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return round(10 * 2 * size ** 3 / best / 1e9, 1)


def machine_info() -> dict:
    """The machine a timing was taken on: CPU, its vector instructions and single-thread matmul speed, cores, Python,
    torch and its default thread count."""
    info = dict(cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(), platform=platform.platform(),
                cpu_vector_flags=cpu_vector_flags(), matmul_gflops_1thread=matmul_gflops())
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    try:
        import torch

        info.update(torch=torch.__version__, torch_default_threads=torch.get_num_threads())
    except ImportError:
        pass
    return info


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes' load on a shared machine)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def min_median(times: list[float]) -> dict:
    """``{"min": ..., "median": ...}`` of a list of seconds (the minimum is the least disturbed run)."""
    return {"min": min(times), "median": statistics.median(times)}


def seconds_per_step(model, loss_of, batches) -> float:
    """CPU seconds (``time.process_time``) per AdamW step on ``model``'s trainable parameters, one step for each of
    ``batches``, where ``loss_of(rows)`` is a batch's loss: the training step the cache benchmarks compare."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    start = time.process_time()
    for rows in batches:
        loss_of(rows).backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.process_time() - start) / len(batches)
