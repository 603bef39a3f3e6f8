"""Compare the samplers on the same images, task, prior and per-image seeds; write a markdown table.

PSNR / SSIM / LPIPS of the 8-bit results against the clean images (LPIPS "n/a" when its weights are not
cached: `spgd weights fetch`), network evaluations per image (counted at the prior) and seconds per image,
plus the seconds of DeqIR's parallel (Anderson) solve against the same chain walked sequentially.
A trained restorer in `--samplers` (diffir) restores with its own weights (`--diffir FILE`, by default the
built-in ones for the task and the size) on the same measurements; its network evaluations per image are 1:
its one DIRformer pass (CPEN and the IPR's four MLP steps, small beside it, are not counted), timed the same way.

Image k is measured once with seed k and every sampler restores that y with seed k (`spgd.harness`). Each
(sampler, image) record is written when done to OUT/records/<task>/<sampler>/<image>.json, OUT being --out
without its suffix, and reused on a rerun: a stopped run resumes, a finished one restores nothing again. A
sampler's folder is named by its --set overrides, so other settings get their own records; OUT/settings.json
holds what the records depend on besides (model, precision, data, size, DiffIR weights), and another value of
those for the same --out is refused. Without --out the records live in a temporary folder.

    python bench/compare_samplers.py --model ../shared/reference/tiny_adm64.pt \\
        --data ../shared/datasets/ffhq-demo --size 64 --limit 2 --task super_resolution \\
        --set dps.steps=20 daps.steps=10 --out bench/results/compare.md
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

import spgd
from spgd import harness, io
from spgd.harness import Method
from spgd.methods import TRAINED, builtin_model, load_model, with_precision
from spgd.metrics import image_scores
from spgd.priors.fast import PRECISIONS
from spgd.run import make_spec
from spgd.tasks import load_task, parse_key_values
from spgd.weights import MissingWeightsError, weights_path

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






def sampler_method(model: Any, name: str, params: dict[str, Any], device: torch.device, nfe: list[float]) -> Method:
    """Sampler `name` with its resolved `params` on `device` (`spgd.restore`, seed k), its network evaluations
    counted and appended to `nfe` for the record."""
    def restore(y: Tensor, operator: Any, clean: Tensor, k: int) -> Tensor:
        counter = (CountingRestorer if name in TRAINED else CountingPrior)(model)
        x = spgd.restore(y.to(device), copy.deepcopy(operator).to(device), counter, sampler=name, seed=[k],
                         progress=False, **params)
        nfe.append(counter.images)
        return x.cpu()

    return Method(restore)


def scorer(with_lpips: bool, nfe: list[float]) -> Callable[[Tensor, Tensor], dict[str, Any]]:
    """A record: the 8-bit scores (`spgd.metrics.image_scores`), or failed for a NaN result, and the network
    evaluations of the restore just run (the harness scores each result right after restoring it)."""
    def score(restored: Tensor, clean: Tensor) -> dict[str, Any]:
        scores = image_scores(restored, clean, with_lpips) if torch.isfinite(restored).all() else {"failed": True}
        return {**scores, "nfe": nfe.pop()}
    return score


def lpips_available() -> bool:
    try:
        weights_path("lpips_alex")
        return True
    except MissingWeightsError:
        return False


def row(name: str, rows: list[dict[str, Any]]) -> str:
    """One sampler's table row: means over its images restored without failure (failures counted)."""
    ok = [r for r in rows if not r.get("failed")]
    failed = f" ({len(rows) - len(ok)} of {len(rows)} failed)" if len(ok) < len(rows) else ""
    if not ok:
        return f"| {name}{failed} | n/a | n/a | n/a | - | - |"
    s = harness.summarise(ok)
    lpips = f"{s['lpips']:.3f}" if "lpips" in s else "n/a"
    return f"| {name}{failed} | {s['psnr']:.2f} | {s['ssim']:.3f} | {lpips} | {s['nfe']:.0f} | {s['seconds']:.3g} |"


def warm_up(y: Tensor, operator: Any, device: torch.device, name: str, model: Any, params: dict[str, Any]) -> None:
    """One untimed run of sampler `name` with `WARMUP`'s settings over its resolved `params` on the measurement
    y, so that start-up costs do not count against its first image; a ValueError if the operator cannot serve
    it (what a sampler needs of the operator, it checks when it runs)."""
    spgd.restore(y.to(device), copy.deepcopy(operator).to(device), model, sampler=name, seed=[0], progress=False,
                 **{**params, **WARMUP.get(name, {})})


def run(args: argparse.Namespace, out: Path) -> str:
    """The comparison through `spgd.harness`, its records under `out`; returns the markdown report."""
    device = torch.device(args.device)
    paths = io.list_images([args.data])[: args.limit]
    if not paths:
        raise ValueError(f"--data {args.data}: no images")
    task = load_task(args.task)
    overrides = parse_overrides(args.set)
    harness.keep_settings(out, {"model": str(args.model), "precision": args.precision, "data": str(args.data),
                        "size": args.size, "diffir": args.diffir})
    prior, _ = with_precision("spgd", spgd.load_prior(args.model, device=device), "", args.precision)
    operator = spgd.make_operator(**task["operator"])
    load = lambda path: io.load_image(path, args.size, resize=True)  # noqa: E731
    first_measurement = functools.cache(lambda: spgd.simulate(load(paths[0])[None], operator, seed=[0]))
    nfe: list[float] = []
    labels: dict[str, str] = {}  # {sampler: its row's records}, for the samplers the operator serves
    table: dict[str, Method] = {}
    settings, restorers, solvers = [], {}, {}
    for name in args.samplers.split(","):
        model = prior
        if name in TRAINED:  # a trained restorer: its own weights, on the same measurements
            if name not in restorers:
                restorers[name] = (load_model(name, args.diffir, device=str(device)) if args.diffir else builtin_model(
                    name, args.task, operator, (args.size,) * 2, device=str(device)))
                settings.append(f"- {name} weights: {restorers[name].description}")
            model = restorers[name]
        spec = make_spec(model, args.task, name, settings=overrides.get(name, {}))
        settings.append(f"- {name}: {spec.settings}")
        runs = {harness.label(name, overrides.get(name, {})): spec.settings}
        if name == "deqir":  # the same chain by the other solver, for the wall-clock comparison
            solver = spec.settings.get("solver", "anderson")
            other = "sequential" if solver == "anderson" else "anderson"
            runs[harness.label(name, {**overrides.get(name, {}), "solver": other})] = {**spec.settings, "solver": other}
            solvers = dict(zip((solver, other), runs))
        if any(not harness.record_path(out, args.task, key, path.stem).is_file() for key in runs for path in paths):
            try:
                warm_up(first_measurement(), operator, device, name, model, spec.settings)
            except ValueError as error:  # a sampler this task's operator cannot serve: a row that says why
                if "needs an operator with" not in str(error):
                    raise
                settings.append(f"  ({error})")
                continue
        labels[name] = next(iter(runs))
        table.update({key: sampler_method(model, name, params, device, nfe) for key, params in runs.items()})
    records = harness.run(out, {args.task: paths}, table, task["operator"], scorer(lpips_available(), nfe), load=load,
                          log=lambda line: print(f"compare_samplers: {line}", file=sys.stderr, flush=True))[args.task]
    lines = [
        f"# Sampler comparison: {args.task}, {len(paths)} image(s) of {args.data} at {args.size}x{args.size}",
        "",
        *([args.note, ""] if args.note else []),
        f"Model `{args.model}` ({args.precision})"
        f"{''.join(f'; {name}: `{m.name}` (fp32, its own weights)' for name, m in restorers.items())}, device {device}"
        f"{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
        f"{torch.get_num_threads()} CPU thread(s), seeds 0..{len(paths) - 1} (image k measured and restored with "
        "seed k, the same for every sampler). Metrics are means over the images, of the 8-bit results; NFE = "
        "network evaluations per image (a backward pass not counted; a trained restorer's: its one network pass); "
        "s / image: the median of one image's restore, after one untimed warm-up run per sampler.",
        "",
        "| sampler | PSNR (dB) | SSIM | LPIPS | NFE | s / image |",
        "|---|---|---|---|---|---|",
        *(row(name, records[labels[name]]) if name in labels else f"| {name} | n/a | n/a | n/a | - | - |"
          for name in args.samplers.split(",")),
        "",
    ]
    if "deqir" in labels:
        (par, par_nfe), (seq, seq_nfe) = ((s["seconds"], s["nfe"]) for s in (
            harness.summarise(records[solvers[solver]]) for solver in ("anderson", "sequential")))
        lines += [f"DeqIR, same chain: parallel (Anderson) {par:.3g} s per image for {par_nfe:.0f} NFE, sequential "
                  f"{seq:.3g} s for {seq_nfe:.0f} NFE; parallel / sequential wall-clock = {par / seq:.2f}.", ""]
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
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                        help="network precision (autocast, channels_last; default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="markdown file to write (printed either way); the records go "
                                                 "to the folder of its name without the suffix")
    parser.add_argument("--note", help="a paragraph to put under the title (what the numbers mean)")
    args = parser.parse_args(argv)
    if args.out is not None and not args.out.suffix:
        parser.error(f"--out {args.out}: name the markdown file, e.g. {args.out}.md (its records go to {args.out}/)")
    try:
        if args.out is None:
            with tempfile.TemporaryDirectory() as folder:
                report = run(args, Path(folder))
        else:
            report = run(args, args.out.with_suffix(""))
    except (ValueError, FileNotFoundError) as error:  # bad settings, files or names: one line
        raise SystemExit(f"compare_samplers: error: {error}") from None
    print(report)
    if args.out is not None:
        io.atomic_write_bytes(args.out, report.encode())


if __name__ == "__main__":
    main()
