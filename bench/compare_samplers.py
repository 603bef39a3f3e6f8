"""Compare the samplers on the same images, task, prior and per-image seeds; write a markdown table.

PSNR / SSIM / LPIPS against the clean images (LPIPS "n/a" when its weights are not cached: `spgd
weights fetch`), network evaluations per image (counted at the prior) and wall time, plus the
wall-clock of DeqIR's parallel (Anderson) solve against the same chain walked sequentially.
A trained restorer in `--samplers` (diffir) restores with its own weights (`--diffir FILE`, by default the
built-in ones for the task and the size) on the same measurements; its network evaluations per image are 1:
its one DIRformer pass (CPEN and the IPR's four MLP steps, small beside it, are not counted), timed the same way.

    python bench/compare_samplers.py --model ../shared/reference/tiny_adm64.pt \\
        --data ../shared/datasets/ffhq-demo --size 64 --limit 2 --task super_resolution \\
        --set dps.steps=20 daps.steps=10 --out bench/results/compare.md
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

import spgd
from spgd import io
from spgd.metrics import lpips, psnr, ssim
from spgd.priors.fast import PRECISIONS, FastDenoiser
from spgd.run import make_spec
from spgd.methods import TRAINED, builtin_model, load_model
from spgd.tasks import load_task, parse_key_values
from spgd.weights import MissingWeightsError

# Minimal settings for one untimed warm-up run per sampler, so one-off start-up costs (lazy imports,
# first allocations) do not count against whichever sampler happens to run first.
WARMUP = {"spgd": {"steps": 1, "inner_steps": 1}, "dps": {"steps": 1}, "reddiff": {"steps": 1},
          "daps": {"steps": 1, "ode_steps": 1, "langevin_steps": 1}, "deqir": {"steps": 1, "max_iter": 3},
          "diffpir": {"steps": 2}, "ddnm": {"steps": 1}, "ddnm_plus": {"steps": 1}, "ddrm": {"steps": 1},
          "pigdm": {"steps": 1}, "pnpdm": {"steps": 1, "diffusion_steps": 2, "langevin_steps": 1, "burn_in": 0,
                                           "samples": 1}, "diffir": {}}
DEFAULT_SAMPLERS = "spgd,dps,daps,reddiff,deqir,diffpir,ddnm,ddnm_plus,ddrm,pigdm,pnpdm"


class CountingPrior:
    """The prior, counting the images it denoises (network evaluations)."""

    def __init__(self, prior: Any) -> None:
        self.prior, self.images = prior, 0

    def __getattr__(self, name: str) -> Any:  # the prior's ladder, noise range and sizes
        return getattr(self.prior, name)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        self.images += x.shape[0]
        return self.prior.denoise(x, sigma)


class CountingRestorer:
    """A trained restorer (DiffIR), counting the images it restores: one network evaluation each."""

    def __init__(self, model: Any, settings: dict[str, Any] | None = None, counter: list[int] | None = None) -> None:
        self.model, self.settings, self.counter = model, settings or {}, counter if counter is not None else [0]

    @property
    def images(self) -> int:
        return self.counter[0]

    def __getattr__(self, name: str) -> Any:  # its channels, size, name, check
        return getattr(self.model, name)

    def configured(self, settings: dict[str, Any]) -> "CountingRestorer":
        return CountingRestorer(self.model, settings, self.counter)

    def restore(self, operator: Any, y: Tensor, seeds: Any, **kwargs: Any) -> Tensor:
        self.counter[0] += y.shape[0] * int(self.settings.get("mean_of", 1))
        return self.model.configured(self.settings).restore(operator, y, seeds, **kwargs)


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """["dps.steps=20", ...] -> {"dps": {"steps": 20}}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_key_values(items, "--set SAMPLER.KEY=VALUE").items():
        sampler, _, param = key.partition(".")
        if not param:
            raise SystemExit(f"--set expects SAMPLER.KEY=VALUE, got {key}={value}")
        out.setdefault(sampler, {})[param] = value
    return out


def timed_restore(clean: Tensor, task: dict, prior: Any, name: str, seeds: list[int], params: dict,
                  batch_size: int, warmup: dict | None = None) -> tuple[Tensor, float, float]:
    """Degrade and restore `clean` `batch_size` images at a time (image i with seeds[i], so its result
    does not depend on the chunking); returns the restored images in [0, 1], the wall seconds of the
    restores and the network evaluations per image. `warmup`: settings of one untimed run first."""
    counter = (CountingRestorer if name in TRAINED else CountingPrior)(prior)
    parts, seconds = [], 0.0
    for start in range(0, clean.shape[0], batch_size):
        op = spgd.make_operator(**task["operator"]).to(clean.device)
        y = spgd.simulate(clean[start: start + batch_size], op, seeds[start: start + batch_size])
        if warmup is not None and start == 0:
            spgd.restore(y, op, prior, sampler=name, seed=seeds[start: start + batch_size], progress=False,
                         **{**params, **warmup})
        if y.is_cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        parts.append(spgd.restore(y, op, counter, sampler=name, seed=seeds[start: start + batch_size],
                                  progress=False, **params))
        if y.is_cuda:
            torch.cuda.synchronize()
        seconds += time.perf_counter() - began
    return torch.cat(parts), seconds, counter.images / clean.shape[0]


def lpips_or_none(x: Tensor, clean: Tensor) -> float | None:
    try:
        return float(lpips(x, clean).mean())
    except MissingWeightsError:
        return None


def compare_one(clean: Tensor, task: dict, prior: Any, name: str, seeds: list[int], params: dict,
                batch_size: int) -> dict[str, Any]:
    """One sampler's table row (and DeqIR's wall clock and NFE per solver, both solvers run)."""
    x, seconds, nfe = timed_restore(clean, task, prior, name, seeds, params, batch_size, warmup=WARMUP.get(name, {}))
    score = lpips_or_none(x, clean)
    result: dict[str, Any] = {
        "row": f"| {name} | {float(psnr(x, clean).mean()):.2f} | {float(ssim(x, clean).mean()):.3f} | "
               f"{'n/a' if score is None else f'{score:.3f}'} | {nfe:.0f} | {seconds:.1f} |"}
    if name == "deqir":
        solver = params.get("solver", "anderson")
        other = "sequential" if solver == "anderson" else "anderson"
        _, other_seconds, other_nfe = timed_restore(clean, task, prior, name, seeds, {**params, "solver": other},
                                                    batch_size)
        result["deqir"] = {solver: [seconds, nfe], other: [other_seconds, other_nfe]}
    return result


def part_path(out: Path, name: str) -> Path:
    """Where one sampler's finished result is kept, beside the report, so a stopped run resumes."""
    return out.with_name(out.stem + "_parts") / f"{name}.json"


def cached_result(out: Path | None, name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """A sampler's kept result if it was computed with exactly these settings, else None."""
    return None if out is None else io.load_keyed_json(part_path(out, name), key)


def run(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    prior = spgd.load_prior(args.model, device=device)
    if args.precision != "fp32":
        prior = FastDenoiser(prior, args.precision)
    paths = io.list_images([args.data])[: args.limit]
    clean = torch.stack([io.load_image(p, args.size, resize=True) for p in paths]).to(device)
    task = load_task(args.task)
    seeds = [args.seed + i for i in range(len(paths))]
    overrides = parse_overrides(args.set)
    rows, settings, deqir_times, restorers = [], [], {}, {}
    for name in args.samplers.split(","):
        model, model_name, precision = prior, str(args.model), args.precision
        if name in TRAINED:  # a trained restorer: its own weights, on the same measurements
            if name not in restorers:
                restorers[name] = (load_model(name, args.diffir, device=str(device)) if args.diffir else builtin_model(
                    name, args.task, spgd.make_operator(**task["operator"]), (args.size,) * 2, device=str(device)))
                settings.append(f"- {name} weights: {restorers[name].description}")
            model, model_name, precision = restorers[name], str(args.diffir or restorers[name].name), "fp32"
        params = make_spec(model, args.task, name, settings=overrides.get(name, {})).settings
        settings.append(f"- {name}: {params}")
        key = {"model": model_name, "precision": precision, "data": str(args.data), "size": args.size,
               "images": len(paths), "task": args.task, "seed": args.seed, "batch_size": args.batch_size,
               "device": str(device), "params": params}
        result = cached_result(args.out, name, key)
        if result is None:
            try:
                result = compare_one(clean, task, model, name, seeds, params, args.batch_size)
            except ValueError as error:  # a sampler this task's operator cannot serve: a row that says why
                if "needs an operator with" not in str(error):
                    raise
                rows.append(f"| {name} | n/a | n/a | n/a | - | - |")
                settings.append(f"  ({error})")
                continue
            if args.out is not None:
                io.save_json({"key": key, **result}, part_path(args.out, name))
        rows.append(result["row"])
        deqir_times.update({solver: tuple(value) for solver, value in result.get("deqir", {}).items()})
    lines = [
        f"# Sampler comparison: {args.task}, {len(paths)} image(s) of {args.data} at {args.size}x{args.size}",
        "",
        *([args.note, ""] if args.note else []),
        f"Model `{args.model}` ({args.precision})"
        f"{''.join(f'; {name}: `{m.name}` (fp32, its own weights)' for name, m in restorers.items())}, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
        f"{torch.get_num_threads()} CPU thread(s), seeds {seeds[0]}..{seeds[-1]} "
        "(image i: seed + i, the same for every sampler). Metrics are means over the images; NFE = network "
        "evaluations per image (a backward pass not counted; a trained restorer's: its one network pass); wall "
        f"time for all images, restored {args.batch_size} at a time, after one untimed warm-up run per sampler.",
        "",
        "| sampler | PSNR (dB) | SSIM | LPIPS | NFE | wall (s) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    if deqir_times:
        (par, par_nfe), (seq, seq_nfe) = deqir_times["anderson"], deqir_times["sequential"]
        lines += [f"DeqIR, same chain: parallel (Anderson) {par:.1f} s for {par_nfe:.0f} NFE per image, sequential "
                  f"{seq:.1f} s for {seq_nfe:.0f} NFE; parallel / sequential wall-clock = {par / seq:.2f}.", ""]
    lines += ["Sampler settings (resolved: defaults, task preset, the prior's recommended settings, --set "
              "overrides):", *settings, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint file or builtin:<name>")
    parser.add_argument("--data", required=True, help="folder of clean images")
    parser.add_argument("--size", type=int, default=256, help="image side (centre-crop and resize)")
    parser.add_argument("--limit", type=int, default=10, help="number of images")
    parser.add_argument("--task", default="super_resolution", help="task preset")
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                        help="comma-separated (default: all; one the task's operator cannot serve gets an n/a row)")
    parser.add_argument("--set", nargs="*", default=[], metavar="SAMPLER.KEY=VALUE", help="override preset settings")
    parser.add_argument("--diffir", help="DiffIR weights for a diffir row (`spgd export-diffir`; default: the "
                                          "built-in ones for the task and --size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                        help="network precision (autocast, channels_last; default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images restored together (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="markdown file to write (printed either way)")
    parser.add_argument("--note", help="a paragraph to put under the title (what the numbers mean)")
    args = parser.parse_args(argv)
    try:
        report = run(args)
    except (ValueError, FileNotFoundError) as error:  # bad settings, files or names: one line
        raise SystemExit(f"compare_samplers: error: {error}") from None
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
