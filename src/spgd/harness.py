"""Methods x images -> records -> table: the loop every quality benchmark shares.

Image k of a set is measured once per kind of measurement (the task's operator, seeded with k, by default;
another where a method restores another measurement, e.g. MATLAB's LR) and every method restores that same y.
Each (method, image) score is written at once, atomically, to OUT/records/<set>/<method>/<stem>.json and read
back on a rerun, so a stopped run loses nothing and a finished one restores nothing again. `shard=(i, n)`
gives one process the images k with k mod n = i (k keeps its seed), so n processes share one OUT.
`summarise` turns the records into one row per method. The bench scripts (bench/README.md) are this loop with
their methods and their tables.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from . import io
from .api import simulate
from .operators import make_operator

SIMULATED = ""  # the measurement the task's operator simulates from image k with seed k


@dataclass
class Method:
    """One row of a table: `restore(y, operator, clean, k)` -> [0, 1] images (`clean` only for an oracle such as
    DiffIR's stage 1), or (images, {score: value}) for a method that also scores what it estimated (a blind
    method's kernel); its network's parameter count, and the measurement it restores (a key of `run`'s
    `measurements`; `SIMULATED` by default)."""

    restore: Callable[[Tensor, Any, Tensor, int], Tensor]
    parameters: float = 0.0
    measurement: str = SIMULATED


def record_path(out: Path, name_set: str, method: str, stem: str) -> Path:
    """Where the score of `method` on image `stem` of `name_set` is kept (a file-system-safe folder per method)."""
    folder = method.replace(" ", "_")
    for gone in "()',":
        folder = folder.replace(gone, "")
    return out / "records" / name_set / folder.replace("=", "-").replace(":", "-") / f"{stem}.json"


def run(out: Path, sets: dict[str, list[Path]], methods: dict[str, Method], operator: dict[str, Any],
        score: Callable[[Tensor, Tensor], dict[str, Any]], load: Callable[[Path], Tensor] = io.load_image,
        measurements: dict[str, Callable[[Tensor, int], Tensor]] | None = None, shard: tuple[int, int] = (0, 1),
        macs: bool = False, log: Callable[[str], None] = print) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{set: {method: the records of its images}}: each (method, image) restored, scored (`score(restored,
    clean)`, 3xHxW each) and written unless its record is there. `load(path)` gives the clean CxHxW image in
    [0, 1]; `operator`: the parameters of the task's operator; `macs`: also count the network's multiply-adds
    on image 0 (torch's FlopCounterMode, FLOPs / 2)."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name_set, files in sets.items():
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
        for k, path in enumerate(files):
            if k % shard[1] != shard[0]:
                continue
            clean, y, op = None, {}, make_operator(**operator)
            for name, method in methods.items():
                record = record_path(out, name_set, name, path.stem)
                if record.is_file():
                    rows[name].append(json.loads(record.read_text()))
                    continue
                if clean is None:  # the task's measurement first: it draws the operator's random parameters
                    clean = load(path)[None]
                    y[SIMULATED] = simulate(clean, op, seed=[k])
                if method.measurement not in y:
                    y[method.measurement] = (measurements or {})[method.measurement](clean, k)
                start = time.perf_counter()
                restored = method.restore(y[method.measurement], op, clean, k)
                restored, own = restored if isinstance(restored, tuple) else (restored, {})
                row = {**score(restored[0], clean[0]), **own, "seconds": time.perf_counter() - start,
                       "image": path.name, "size": list(clean.shape[-2:])}
                if macs and k == 0:
                    counter = FlopCounterMode(display=False)
                    with counter:
                        method.restore(y[method.measurement], op, clean, k)
                    row["macs"] = counter.get_total_flops() / 2
                io.atomic_write_bytes(record, json.dumps(row).encode())
                rows[name].append(row)
                shown = next((f"{key} {row[key]:.2f}" for key in ("psnr_y", "psnr") if key in row), "")
                log(f"{name_set} {name} {path.name}: {shown} ({row['seconds']:.2f} s)")
        table[name_set] = rows
    return table


def label(method: str, settings: dict[str, Any]) -> str:
    """A table row and its records' folder: the method and the settings that make its results, e.g.
    "wiener (balance=0.001)", so results of other settings get records of their own."""
    from .run import shown_value

    return f"{method} ({', '.join(f'{k}={shown_value(v)}' for k, v in settings.items())})" if settings else method


def keep_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse an OUT whose records were made with other `settings` (what the records depend on besides
    their set, method label and image: the model, precision, size...); write them otherwise."""
    path = out / "settings.json"
    old = json.loads(path.read_text()) if path.is_file() else settings
    changed = [f"{key}: {old.get(key)!r} there, {settings.get(key)!r} now" for key in sorted(old.keys() | settings.keys())
               if old.get(key) != settings.get(key)]
    if changed:
        raise ValueError(f"{out} holds records of other settings ({'; '.join(changed)}); use another --out")
    io.save_json(settings, path)


NOT_SCORES = ("image", "seconds", "size", "macs")


def summarise(rows: Iterable[dict[str, Any]], parameters: float = 0.0) -> dict[str, Any]:
    """One method's records as one row: the mean of every score all records hold (an older record may lack
    one), its population std for PSNR, the median seconds, the multiply-adds counted, the image count."""
    rows = list(rows)
    keys = sorted(set.intersection(*map(set, rows)) - set(NOT_SCORES))
    summary = {"images": len(rows), "params": parameters, "seconds": float(np.median([r["seconds"] for r in rows])),
               **{key: float(np.mean([r[key] for r in rows])) for key in keys}}
    if "psnr" in keys:
        summary["psnr_std"] = float(np.std([r["psnr"] for r in rows]))
    counted = next((r["macs"] for r in rows if "macs" in r), None)
    summary["gmacs"] = counted / 1e9 if counted is not None else None
    return summary


def summaries(out: Path, sets: dict[str, list[Path]], methods: dict[str, Method], operator: dict[str, Any],
              score: Callable[[Tensor, Tensor], dict[str, Any]], shard: tuple[int, int] = (0, 1),
              load: Callable[[Path], Tensor] = io.load_image) -> dict[str, dict[str, dict[str, Any]]]:
    """`run`, then each method's records summarised (`summarise`): {set: {method: its row}}, the methods with no
    record (another shard's) left out; progress lines printed as they come."""
    records = run(out, sets, methods, operator, score, load=load, shard=shard,
                  log=lambda line: print(line, flush=True))
    return {name_set: {name: summarise(got, methods[name].parameters) for name, got in rows.items() if got}
            for name_set, rows in records.items()}


def stored(restored: Tensor) -> Tensor:
    """A [0, 1] result as an 8-bit PNG holds it: every table scores what a person would get as a file."""
    return torch.from_numpy(io.to_uint8(restored)).permute(2, 0, 1).float() / 255


def rgb_scores(lpips: bool) -> Callable[[Tensor, Tensor], dict[str, Any]]:
    """The score of a result as stored (`stored`): RGB PSNR and SSIM, and LPIPS (AlexNet) with `lpips`."""
    from .metrics import image_scores

    def scores(restored: Tensor, clean: Tensor) -> dict[str, Any]:
        return image_scores(stored(restored), clean, lpips)
    return scores


def add_arguments(parser: Any) -> None:
    """The flags every harness script shares: --limit, --prior, --samplers, --lpips, --shard, --out."""
    parser.add_argument("--limit", type=int, help="only the first N images of each set")
    parser.add_argument("--prior", default="builtin:natural", help="the diffusion prior of --samplers")
    parser.add_argument("--samplers", nargs="*", default=[], metavar="NAME[:KEY=VALUE,...]")
    parser.add_argument("--lpips", action="store_true", help="also score LPIPS (AlexNet)")
    parser.add_argument("--shard", type=lambda t: tuple(int(v) for v in t.split("/")), default=(0, 1), metavar="I/N",
                        help="restore only the images k with k mod N = I (N processes share one --out)")
    parser.add_argument("--out", type=Path, required=True, help="records, results.json and results.md (resumed)")


def write_report(out: Path, report: dict[str, dict[str, dict[str, Any]]],
                 columns: Sequence[tuple[str, str, str]]) -> str:
    """OUT/results.json ({"sets": report}) and OUT/results.md, one row per set and method with `columns`
    ((header, summary key, format)); a score a row lacks shows as nan. Returns the markdown."""
    io.atomic_write_bytes(out / "results.json", json.dumps({"sets": report}, indent=1).encode())
    lines = ["| set | method | " + " | ".join(h for h, _, _ in columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for name_set, rows in report.items():
        for name, row in rows.items():
            cells = [format(row.get(key, float("nan")), fmt) for _, key, fmt in columns]
            lines.append(f"| {name_set} | {name} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    io.atomic_write_bytes(out / "results.md", markdown.encode())
    return markdown
