"""Any image size through the tiled denoiser: seams, and cost against pixel count, in one run.

seams: restores images larger than the prior (4x SR, SPGD at short settings) with blended tiles (overlap
half a tile, halo tile/8: spgd's default), with independent tiles (no overlap, no halo: the usual
alternative) and with random-shift tiles (no overlap, the grid moved at every call), and DDNM (its
defaults) with blended tiles, random-shift tiles and its own Mask-Shift (tiles one after the other, the
overlap with finished tiles known), and compares the mean gradient magnitude of the restored image on
the pixel pairs that straddle a possible seam (where the blending weights of one tile end; for random
shifts, the tile borders of the last denoiser call, whose x0 the result is; for Mask-Shift, where a
tile's pixels end and the next tile's new ones begin) against all other pixel pairs: a ratio near 1
means no visible seam. The image is smooth (random values every 8 px, upsampled), so a seam is not hidden by
texture. Writes the worst case as a picture.
cost: one denoiser call and one input gradient (the per-tile VJP SPGD and DPS need) per size, each in a
fresh process, with its seconds and peak resident memory above the loaded model; `--graph-budgets` compares
the activations a gradient call may keep (0: every tile computed again in the backward pass).
whole: the prior's x0 estimate of a noisy photo (scikit-image's coffee, in no training set) at several noise
levels, from blended tiles, random-shift tiles and one whole-image call of the network (reflect-padded to a
multiple of 8, what its three downsamplings need): PSNR against the clean photo, and seconds. Whether a
convolutional prior should run whole-image, answered by measurement (docs/any-size.md).

  python bench/any_size.py seams --out bench/results/any_size
  python bench/any_size.py cost --sizes 64x64 128x128 256x256 512x512 768x1024 --tilings blend shift
  python bench/any_size.py cost --model builtin:natural --sizes 256x256 1024x768 --tilings shift --graph-budgets 0 2048
  python bench/any_size.py whole --model builtin:natural --sizes 128x128 384x256 600x400
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import spgd
from spgd.io import save_image
from spgd.metrics import psnr
from spgd.priors.tiled import GRAPH_BUDGET_MIB, TiledDenoiser
from spgd.tiles import tile_starts

BLENDED = "blended (overlap tile/2, halo tile/8)"
SHIFTED = "random-shift tiles (overlap tile/4, halo tile/16)"
TILINGS = {  # name: sampler, the tiled denoiser's settings, the sampler's own
    f"SPGD, {BLENDED}": ("spgd", {}, {}),
    "SPGD, independent tiles": ("spgd", {"overlap": 0, "halo": 0}, {}),
    "SPGD, random-shift tiles, no overlap": ("spgd", {"shift": True, "overlap": 0, "halo": 0}, {}),
    f"SPGD, {SHIFTED}": ("spgd", {"shift": True}, {}),
    f"DDNM, {BLENDED}": ("ddnm", {}, {}),
    "DDNM, random-shift tiles, no overlap": ("ddnm", {"shift": True, "overlap": 0, "halo": 0}, {}),
    f"DDNM, {SHIFTED}": ("ddnm", {"shift": True}, {}),
    "DDNM, Mask-Shift (tiles in sequence)": ("ddnm", {}, {"mask_shift": True}),
}


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A [0, 1] colour image with only low frequencies: random values every 8 px, bicubically upsampled."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, height // 8 + 2, width // 8 + 2, generator=g)
    x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
    return ((x - x.min()) / (x.max() - x.min())).clamp(0, 1)


class LastShift(TiledDenoiser):
    """Random-shift tiles that remember the offsets of their last call (shared by the seeded copies)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[list[tuple[int, int]]] = []

    def offsets(self, sigma, height, width):
        shifts = super().offsets(sigma, height, width)
        self.history.append(shifts)
        return shifts


def seam_edges(length: int, tiling: TiledDenoiser, mask_shift: bool, shift: int = 0) -> list[int]:
    """Positions where a seam may show: the ends of each tile's core (blended tiles; for random-shift tiles those
    of the last call's grid on its canvas, `shift` its offset on this axis), or, for Mask-Shift, the ends of
    each tile but the last (where the next tile's new pixels begin)."""
    if mask_shift:
        return [start + tiling.tile for start in tile_starts(length, tiling.tile, tiling.tile // 2)[:-1]]
    stride = tiling.tile - tiling.overlap
    canvas = length + stride if tiling.shift and length > tiling.tile else length
    ends = [edge for start in tile_starts(canvas, tiling.tile, stride)
            for edge in (start + (tiling.halo if start else 0),
                         start + tiling.tile - (tiling.halo if start + tiling.tile < canvas else 0))]
    return [edge - shift for edge in ends if 0 < edge - shift < length]


def seam_mask(length: int, edges: list[int]) -> torch.Tensor:
    """True at positions i where the pair (i, i+1) straddles one of the edges."""
    mask = torch.zeros(length - 1, dtype=torch.bool)
    for edge in edges:
        if 0 < edge < length:
            mask[edge - 1] = True
    return mask


def seam_ratio(x: torch.Tensor, tiling: TiledDenoiser, mask_shift: bool = False) -> float:
    """Mean |difference| of neighbouring pixels across seams over that elsewhere (rows and columns; one image)."""
    dx, dy = (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()
    oy, ox = tiling.history[-1][0] if tiling.shift else (0, 0)
    mx = seam_mask(x.shape[-1], seam_edges(x.shape[-1], tiling, mask_shift, ox))
    my = seam_mask(x.shape[-2], seam_edges(x.shape[-2], tiling, mask_shift, oy))
    on = torch.cat([dx[..., mx].flatten(), dy[..., my, :].flatten()])
    off = torch.cat([dx[..., ~mx].flatten(), dy[..., ~my, :].flatten()])
    return float(on.mean() / off.mean())


def seams(args: argparse.Namespace) -> None:
    prior = spgd.load_prior(args.model)
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    spgd_settings = {**prior.recommended("super_resolution", "spgd"), "mean_of": 1, "steps": args.steps}
    rows, worst = [], (0.0, None, "")
    for seed in range(args.images):
        clean = smooth_image(args.height, args.width, seed)
        y = spgd.simulate(clean, op, seed=seed)
        for name, (sampler, kw, own) in TILINGS.items():
            if args.only and args.only not in name:
                continue
            tiled = LastShift(prior, **kw)
            settings = {**(spgd_settings if sampler == "spgd" else {}), **own}
            start = time.perf_counter()
            out = spgd.restore(y, op, tiled, sampler=sampler, seed=seed, progress=False, **settings)
            ratio = seam_ratio(out, tiled, bool(own.get("mask_shift")))
            rows.append({"image": seed, "tiling": name, "seam_ratio": ratio, "psnr": float(psnr(out, clean)),
                         "seconds": time.perf_counter() - start})
            print(json.dumps(rows[-1]), flush=True)
            if ratio > worst[0]:
                worst = (ratio, torch.cat([clean, out], dim=-1), name)
    args.out.mkdir(parents=True, exist_ok=True)
    save_image(worst[1][0], args.out / "worst_seams.png")
    (args.out / "seams.json").write_text(json.dumps(rows, indent=1))
    print("| tiling | seam ratio (mean, max) | PSNR | s/image |\n|---|---|---|---|")
    for name in TILINGS:
        r = [row for row in rows if row["tiling"] == name]
        if not r:
            continue
        ratios = [row["seam_ratio"] for row in r]
        print(f"| {name} | {sum(ratios) / len(r):.3f}, {max(ratios):.3f} | {sum(row['psnr'] for row in r) / len(r):.2f} "
              f"| {sum(row['seconds'] for row in r) / len(r):.1f} |")
    print(f"worst case ({worst[2]}, ratio {worst[0]:.3f}): {args.out / 'worst_seams.png'} (clean | restored)")


def one_cost(model: str, height: int, width: int, tiling: str = "blend", budget: float = GRAPH_BUDGET_MIB) -> dict:
    """Seconds and peak memory (MiB above the loaded model) of one call and one input gradient at this size, and
    the tiles of the call."""
    net = spgd.load_prior(model)
    tiles, denoise = [], net.denoise
    net.denoise = lambda x, sigma: (tiles.append(x.shape[0]), denoise(x, sigma))[1]
    prior = TiledDenoiser(net, shift=tiling == "shift", graph_budget_mib=budget).for_seeds([0])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = torch.randn(1, 3, height, width)
    start = time.perf_counter()
    with torch.no_grad():
        prior.denoise(x, 1.0)
    call, count = time.perf_counter() - start, sum(tiles)
    x.requires_grad_(True)
    start = time.perf_counter()
    prior.denoise(x, 1.0).square().sum().backward()
    grad = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"size": f"{width}x{height}", "tiling": tiling, "budget": budget, "pixels": height * width, "tiles": count,
            "call_s": call, "gradient_s": grad, "peak_mib": peak}


def cost(args: argparse.Namespace) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), tile batch 16\n"
          "| size (WxH) | tiling | graph budget MiB | pixels | tiles | call s | gradient s | s per megapixel (call) "
          "| peak MiB |\n|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        for tiling in args.tilings:
            for budget in args.graph_budgets:
                out = subprocess.run([sys.executable, __file__, "_one", args.model, str(h), str(w), tiling, str(budget)],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                print(f"| {r['size']} | {tiling} | {budget:g} | {r['pixels']} | {r['tiles']} | {r['call_s']:.2f} | "
                      f"{r['gradient_s']:.2f} | {r['call_s'] / r['pixels'] * 1e6:.2f} | {r['peak_mib']:.0f} |", flush=True)


def whole_image_call(net, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """One call of the network on the whole image, reflect-padded on the bottom/right to a multiple of 8."""
    height, width = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (0, -width % 8, 0, -height % 8), mode="reflect")
    return net.denoise(padded, sigma)[..., :height, :width]


def whole(args: argparse.Namespace) -> None:
    from skimage import data

    net = spgd.load_prior(args.model)
    ways = {"blended tiles": TiledDenoiser(net).denoise,
            "random-shift tiles": TiledDenoiser(net, shift=True).for_seeds([0]).denoise,
            "whole image": lambda x, sigma: whole_image_call(net, x, sigma)}
    photo = torch.from_numpy(data.coffee().copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():  # a warm-up call, so the first row's seconds are not those of a cold start
        ways["blended tiles"](photo[..., :128, :128] * 2 - 1, 1.0)
    print(f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); x0 PSNR (dB) / seconds\n"
          f"| size (WxH) | sigma | {' | '.join(ways)} |\n|---|---|{'---|' * len(ways)}")
    rows = []
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        top, left = (photo.shape[-2] - h) // 2, (photo.shape[-1] - w) // 2
        clean = photo[..., top:top + h, left:left + w]
        for sigma in args.sigmas:
            noisy = clean * 2 - 1 + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
            row = {"size": size, "sigma": sigma}
            for name, denoise in ways.items():
                start = time.perf_counter()
                with torch.no_grad():
                    x0 = denoise(noisy, sigma)
                row[name] = (float(psnr(((x0 + 1) / 2).clamp(0, 1), clean)), time.perf_counter() - start)
            rows.append(row)
            print(f"| {size} | {sigma:g} | " + " | ".join(f"{row[n][0]:.2f} / {row[n][1]:.2f}" for n in ways) + " |",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "whole.json").write_text(json.dumps({"model": args.model, "torch": torch.__version__,
                                                     "threads": torch.get_num_threads(), "rows": rows}, indent=1))


def main() -> None:
    if sys.argv[1:2] == ["_one"]:
        torch.set_num_threads(1)
        print(json.dumps(one_cost(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("seams")
    s.add_argument("--model", default="builtin:faces64")
    s.add_argument("--images", type=int, default=2)
    s.add_argument("--height", type=int, default=96)
    s.add_argument("--width", type=int, default=128)
    s.add_argument("--steps", type=int, default=10, help="SPGD outer steps (default: %(default)s)")
    s.add_argument("--only", default="", help="only the rows whose name contains this")
    s.add_argument("--out", type=Path, default=Path("bench/results/any_size"))
    c = sub.add_parser("cost")
    c.add_argument("--model", default="builtin:faces64")
    c.add_argument("--sizes", nargs="+", default=["64x64", "128x128", "256x256", "512x512", "1024x768"])
    c.add_argument("--tilings", nargs="+", default=["blend"], choices=["blend", "shift"])
    c.add_argument("--graph-budgets", nargs="+", type=float, default=[GRAPH_BUDGET_MIB], metavar="MIB",
                   help="activations a gradient call keeps (default: spgd's, %(default)s)")
    h = sub.add_parser("whole")
    h.add_argument("--model", default="builtin:natural")
    h.add_argument("--sizes", nargs="+", default=["128x128", "384x256", "600x400"])
    h.add_argument("--sigmas", nargs="+", type=float, default=[0.05, 0.2, 1.0, 5.0])
    h.add_argument("--out", type=Path, default=Path("bench/results/any_size/natural"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"seams": seams, "cost": cost, "whole": whole}[args.what](args)


if __name__ == "__main__":
    main()
