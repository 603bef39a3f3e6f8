"""Threads and OpenMP wait policies on idle and busy cores: a restore and a training run, timed in one run.

Each workload runs as its own `spgd` process (so OpenMP starts with that setting's environment), once per
setting and per load; the load is `k` other processes spinning on the CPU, started before the timed
command and stopped after it. Settings:
  spgd default        what a user gets with no flag and no variable: one thread per free core
  --threads 1         one torch thread
  2 + PASSIVE         OMP_WAIT_POLICY=PASSIVE, 2 threads
  2 + OpenMP default  2 threads, libgomp's own wait (spgd's default before it counted free cores)
  2 + ACTIVE          OMP_WAIT_POLICY=ACTIVE (only with --active: it is the slowest by far under load)
The restore is the README's first command as written; training is `spgd train` on random 64x64 images
(the built-in prior's network and batch), timed as whole commands. Each row gives seconds and the ratio to
the best setting under the same load. The table goes to stdout, --out and, between markers, BENCHMARKS.md.

  python bench/threads.py --loads 0 1 --out bench/results/threads.md --benchmarks BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

README_RESTORE = ["restore", "-t", "super_resolution", "--simulate", "-i", "demo:astronaut", "--resize"]
MARKERS = ("<!-- bench/threads.py: begin -->", "<!-- bench/threads.py: end -->")
CLEARED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SETTINGS = {
    "spgd default": ({}, []),
    "--threads 1": ({}, ["--threads", "1"]),
    "2 + PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", "2"]),
    "2 + OpenMP default": ({}, ["--threads", "2"]),
    "2 + ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, ["--threads", "2"]),
}


def spinners(k: int) -> list[subprocess.Popen]:
    """`k` processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]


def timed(command: list[str], env: dict[str, str], load: int) -> float:
    """Wall seconds of one `spgd` command under `load` spinning processes."""
    busy = spinners(load)
    try:
        time.sleep(0.5 if load else 0)  # let the spinners take their cores
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "spgd", *command], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        for p in busy:
            p.kill()
            p.wait()


def workloads(work: Path, train_steps: int) -> dict[str, list[str]]:
    """The two commands; OUT stands for an output folder, new for every run."""
    data = work / "random64.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (256, 3, 64, 64), dtype=np.uint8))
    return {
        "restore (README's first command)": [*README_RESTORE, "-o", "OUT"],
        f"train ({train_steps} steps, batch 32)": [
            "train", "--data", str(data), "--out", "OUT", "--config", "faces64", "--objective", "edm",
            "--batch-size", "32", "--steps", str(train_steps), "--grid-every", "0", "--ckpt-every", "0"],
    }


def table(rows: list[tuple[str, int, str, float]], loads: list[int]) -> str:
    """Markdown: one line per workload and setting, seconds (ratio to the best of that load) per load."""
    head = "| workload | setting | " + " | ".join(f"{k} busy core(s)" for k in loads) + " |"
    lines = [head, "|" + "---|" * (2 + len(loads))]
    best = {(w, k): min(s for w2, k2, _, s in rows if (w2, k2) == (w, k)) for w, k, _, _ in rows}
    for w in dict.fromkeys(r[0] for r in rows):
        for name in dict.fromkeys(r[2] for r in rows if r[0] == w):
            cells = []
            for k in loads:
                s = next(s for w2, k2, n2, s in rows if (w2, k2, n2) == (w, k, name))
                cells.append(f"{s:.1f} s ({s / best[w, k]:.2f}x)")
            lines.append(f"| {w} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between MARKERS in `path` (appending a marked section if there is none)."""
    old = path.read_text()
    block = f"{MARKERS[0]}\n{text}\n{MARKERS[1]}"
    if MARKERS[0] in old and MARKERS[1] in old:
        new = old[:old.index(MARKERS[0])] + block + old[old.index(MARKERS[1]) + len(MARKERS[1]):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1], help="busy cores to test (default: 0 1)")
    parser.add_argument("--active", action="store_true", help="also time OMP_WAIT_POLICY=ACTIVE")
    parser.add_argument("--train-steps", type=int, default=30, help="steps of the training run (default: %(default)s)")
    parser.add_argument("--only", choices=["restore", "train"], help="time one workload only")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--benchmarks", type=Path, help="also write it between this file's bench/threads.py markers")
    args = parser.parse_args()
    settings = {k: v for k, v in SETTINGS.items() if args.active or k != "2 + ACTIVE"}
    base_env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for work_name, command in workloads(Path(tmp), args.train_steps).items():
            if args.only and not work_name.startswith(args.only):
                continue
            for load in args.loads:
                for name, (env, flags) in settings.items():
                    out = str(Path(tempfile.mkdtemp(dir=tmp)) / "run")
                    seconds = timed([out if a == "OUT" else a for a in command] + flags, {**base_env, **env}, load)
                    rows.append((work_name, load, name, seconds))
                    print(f"{work_name} | {load} busy | {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    import torch

    text = (f"Device: CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch "
            f"{torch.__version__}, Python {platform.python_version()}. Command: `python bench/threads.py "
            f"{' '.join(sys.argv[1:])}`. Whole-command wall times, one run each; (ratio to the best setting "
            f"under the same load).\n\n" + table(rows, args.loads))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.benchmarks:
        write_between_markers(args.benchmarks, text)


if __name__ == "__main__":
    main()
