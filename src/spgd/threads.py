"""CPU threads that keep their speed when other programs share the cores.

torch's CPU kernels run on an OpenMP pool whose threads meet at a barrier after every parallel
region. When another program holds one of the cores, the torch thread that shares it runs at half
speed and every barrier waits for it: on 2 cores with one busy, the README's first command with 2
threads ran 15.7x slower than with 1. OMP_WAIT_POLICY=PASSIVE avoids most of that but costs 1.8x on idle
cores, where 2 spinning threads are fastest (bench/threads.py, BENCHMARKS.md). So by default spgd
counts the cores other programs keep busy (from /proc/stat, less this process's own CPU time) and
runs one torch thread per free core, looking again between training steps.

What the user sets wins: `--threads N` / `set_threads(N)`, OMP_NUM_THREADS, or a count set with
`torch.set_num_threads` before spgd chose one; OMP_WAIT_POLICY / GOMP_SPINCOUNT reach OpenMP untouched.
Other programs' niced CPU time (`nice`, a background job) counts as free while this process runs at
normal priority, since the kernel's scheduler then gives this process nearly all of that core.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

MIN_WINDOW = 0.2  # seconds of /proc/stat needed for a reading (20 clock ticks per core)
FREE_ENOUGH = 0.7  # a core counts as free when other programs leave at least this fraction of it idle

_state: dict[str, Any] = {"chosen": None, "how": "torch's default", "last": None}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which taskset and cgroups narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _snapshot() -> tuple[float, float, float, int] | None:
    """(wall seconds, busy CPU seconds of the machine, this process's CPU seconds, cores) now; None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + system + irq + softirq + steal + (nice if os.getpriority(os.PRIO_PROCESS, 0) > 0 else 0)
    own = os.times()
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, os.cpu_count() or 1


def busy_cores() -> float | None:
    """Cores kept busy by other programs since the last reading (at least MIN_WINDOW seconds ago: it waits
    out the rest), or None where /proc/stat cannot be read."""
    last = _state["last"] or _snapshot()
    if last is None:
        return None
    wait = MIN_WINDOW - (time.monotonic() - last[0])
    if wait > 0:
        time.sleep(wait)
    now = _snapshot()
    _state["last"] = now
    wall = now[0] - last[0]
    others = (now[1] - last[1]) - (now[2] - last[2])
    return min(max(others / wall, 0.0), float(now[3]))


def free_cores() -> int:
    """The cores this process may use that other programs leave free (at least one)."""
    cores = available_cores()
    busy = busy_cores()
    if busy is None:
        return cores
    return max(1, min(cores, math.floor((os.cpu_count() or cores) - busy + 1 - FREE_ENOUGH)))


def _user_count() -> str | None:
    """Why the thread count is the user's to keep, or None when spgd may choose it."""
    import torch

    if _state["how"] == "--threads":
        return "--threads"
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return "OMP_NUM_THREADS"
    expected = _state["chosen"] if _state["chosen"] is not None else available_cores()
    return "torch.set_num_threads" if torch.get_num_threads() != expected else None


def set_threads(threads: int | None = None) -> int:
    """Use `threads` torch threads, or (None) one per free core unless the user fixed the count."""
    import torch

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        _state["how"] = "--threads"
    elif (kept := _user_count()) is not None:
        _state["how"] = kept
        return torch.get_num_threads()
    else:
        threads = free_cores()
        _state["how"] = f"free cores ({threads} of {available_cores()})"
    torch.set_num_threads(threads)
    _state["chosen"] = threads
    return threads


def adapt() -> int:
    """Between units of long work (training steps): follow the free cores if spgd chose the count."""
    import torch

    return set_threads(None) if _state["how"].startswith("free cores") else torch.get_num_threads()


def describe() -> dict[str, Any]:
    """The threading in force, for config.yaml and the one line a run prints."""
    import torch

    policy = {name: os.environ[name] for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if name in os.environ}
    return {"threads": torch.get_num_threads(), "chosen_by": _state["how"],
            "openmp_wait": policy or "OpenMP's default"}


def summary() -> str:
    """One line: threads, why, and OpenMP's wait setting."""
    info = describe()
    wait = info["openmp_wait"] if isinstance(info["openmp_wait"], str) else \
        ", ".join(f"{k}={v}" for k, v in info["openmp_wait"].items())
    return f"{info['threads']} CPU thread(s), chosen by {info['chosen_by']}; OpenMP wait: {wait}"
