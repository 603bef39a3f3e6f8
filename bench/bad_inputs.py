"""Run spgd's command line on bad and unusual inputs and tabulate what each one answers: docs/errors.md.

Every case must end with a clear outcome: a non-zero exit with one error line on stderr (warnings about
single skipped images may precede it), naming the file or flag and what is wrong, and never a traceback. The script fails (exit 1) if any case does
not. It runs the CLI in this process (fast), on the tiny reference model of ../shared when present,
else on the built-in prior; each case that reaches a restore runs two steps. The oversized images are PNG
headers that claim their size and hold no pixels (`spgd.io.raw_png`).

    python bench/bad_inputs.py [--out docs/errors.md]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spgd.cli import main
from spgd.io import raw_png

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT.parent / "shared" / "reference" / "tiny_adm64.pt"
FAST = ["--steps", "2", "--inner-steps", "1"]
PROGRESS_BAR = re.compile(r"\| *\d+/\d+ \[")  # a tqdm bar's "| 2/2 [" (the job's bar, left at its end)
NOTICES = ("spgd: model: ", "spgd: threads: ")  # the lines naming the models and threads: information, not the answer


def prepare(folder: Path) -> dict[str, str]:
    """The files the cases use, written into `folder`; returns {name: path}."""
    rng = np.random.default_rng(0)
    files = {}

    def image(name: str, size: tuple[int, int], channels: int = 3) -> None:
        shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
        files[name] = str(folder / name)

    image("face.png", (64, 64))
    image("big.png", (80, 60))
    image("low.png", (16, 16))
    image("odd.png", (25, 16))
    image("mask_small.png", (32, 32), channels=1)
    for name, size in (("huge.png", (15000, 15000)), ("large.png", (8000, 6000))):
        files[name] = str(raw_png(folder / name, *size))
    (folder / "random.png").write_bytes(rng.bytes(500))
    files["random.png"] = str(folder / "random.png")
    data = (folder / "face.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    files["truncated.png"] = str(folder / "truncated.png")
    (folder / "random.pt").write_bytes(rng.bytes(1000))
    files["random.pt"] = str(folder / "random.pt")
    torch.save({"conv.weight": torch.zeros(3)}, folder / "other_net.pt")
    files["other_net.pt"] = str(folder / "other_net.pt")
    np.save(folder / "even.npy", np.ones((4, 4)))
    np.save(folder / "negative.npy", -np.ones((5, 5)))
    (folder / "kernel.npy").write_text("not numpy")
    for name in ("even.npy", "negative.npy", "kernel.npy"):
        files[name] = str(folder / name)
    for sub in ("dupA", "dupB", "empty", "bad_data"):
        (folder / sub).mkdir()
    for sub in ("dupA", "dupB"):
        (folder / sub / "face.png").write_bytes((folder / "face.png").read_bytes())
        files[sub] = str(folder / sub / "face.png")
    (folder / "bad_data" / "a.png").write_bytes(rng.bytes(100))
    files["empty"], files["bad_data"] = str(folder / "empty"), str(folder / "bad_data")
    (folder / "no_operator.yaml").write_text("spgd: {lr: 1.0}\n")
    files["no_operator.yaml"] = str(folder / "no_operator.yaml")
    (folder / "a_file").write_text("x")
    files["a_file"] = str(folder / "a_file")
    earlier = folder / "earlier_run"
    earlier.mkdir()
    (earlier / "config.yaml").write_text("model: x\n")
    files["earlier_run"] = str(earlier)
    rgba = np.dstack([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.full((64, 64), 255, np.uint8)])
    rgba[:8, :8, 3] = 0
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    files["transparent.png"] = str(folder / "transparent.png")
    return files


def cases(f: dict[str, str], model: str, out: str) -> list[tuple[str, list[str]]]:
    """(what is wrong, command line) for every case."""
    m = ["-m", model]
    restore = ["restore", "-o", out, *m]
    face = ["-i", f["face.png"]]
    return [
        ("image file of random bytes", [*restore, "-t", "hdr", "--simulate", "-i", f["random.png"]]),
        ("truncated PNG", [*restore, "-t", "hdr", "--simulate", "-i", f["truncated.png"]]),
        ("image of 15000x15000 pixels (225 megapixels)", [*restore, "-t", "hdr", "--simulate", "-i", f["huge.png"]]),
        ("image of 8000x6000 pixels (48 megapixels)", [*restore, "-t", "hdr", "--simulate", "-i", f["large.png"]]),
        ("transparent pixels for a task that cannot leave pixels out",
         [*restore, "-t", "super_resolution", "--simulate", "-i", f["transparent.png"]]),
        ("4x SR of an image whose sides are not multiples of 4, no --resize",
         [*restore, "-t", "super_resolution", "--simulate", "-i", f["odd.png"]]),
        ("input file that does not exist", [*restore, "-t", "hdr", "-i", "missing.png"]),
        ("input folder without images", [*restore, "-t", "hdr", "-i", f["empty"]]),
        ("two inputs with the same file name", [*restore, "-t", "hdr", "--simulate", "-i", f["dupA"], f["dupB"]]),
        ("unknown task", [*restore, "-t", "deblurr", *face]),
        ("task YAML file that does not exist", [*restore, "-t", "mine.yaml", *face]),
        ("task YAML without an operator", [*restore, "-t", f["no_operator.yaml"], *face]),
        ("unknown sampler", [*restore, "-t", "hdr", "--sampler", "ddpmx", *face]),
        ("checkpoint that does not exist", ["restore", "-o", out, "-m", "nope.pt", "-t", "hdr", *face]),
        ("checkpoint of random bytes", ["restore", "-o", out, "-m", f["random.pt"], "-t", "hdr", *face]),
        ("checkpoint of another network", ["restore", "-o", out, "-m", f["other_net.pt"], "-t", "hdr", *face]),
        ("architecture that does not fit the checkpoint", [*restore, "--arch", "ffhq256", "-t", "hdr", *face]),
        ("unknown architecture", [*restore, "--arch", "ffhq1024", "-t", "hdr", *face]),
        ("built-in prior that does not exist", ["restore", "-o", out, "-m", "builtin:cats", "-t", "hdr", *face]),
        ("inpainting mask of the wrong size", [*restore, "-t", "inpainting_box", *face, "--mask", f["mask_small.png"]]),
        ("inpainting mask of 15000x15000 pixels", [*restore, "-t", "inpainting_box", *face, "--mask", f["huge.png"]]),
        ("mask file that is not an image", [*restore, "-t", "inpainting_box", *face, "--mask", f["random.png"]]),
        ("mask for a task without one", [*restore, "-t", "super_resolution", *face, "--mask", f["face.png"]]),
        ("blur kernel of even size", [*restore, "-t", "gaussian_blur", *face, "--kernel", f["even.npy"]]),
        ("blur kernel with negative values", [*restore, "-t", "gaussian_blur", *face, "--kernel", f["negative.npy"]]),
        ("blur kernel file that cannot be read", [*restore, "-t", "gaussian_blur", *face, "--kernel", f["kernel.npy"]]),
        ("measured inpainting without a mask", [*restore, "-t", "inpainting_random", *face]),
        ("measured motion blur without a kernel", [*restore, "-t", "motion_blur", *face]),
        ("measured Gaussian blur without its width or a kernel", [*restore, "-t", "gaussian_blur", *face]),
        ("measured phase retrieval (not an image)", [*restore, "-t", "phase_retrieval", *face]),
        ("reference image (resized to the prior) for an image of another size, no --resize",
         [*restore, "-t", "hdr", "--simulate", "-i", f["big.png"], "--sampler", "deqir", "--set",
          "init_objective=l2", "--reference", f["face.png"]]),
        ("unknown sampler setting", [*restore, "-t", "hdr", *face, "--set", "momentum=0.5"]),
        ("setting without a value", [*restore, "-t", "hdr", *face, "--set", "lr"]),
        ("setting given twice", [*restore, "-t", "hdr", *face, "--set", "lr=1", "lr=2"]),
        ("learning rate NaN", [*restore, "-t", "hdr", *face, "--lr", "nan"]),
        ("text for a number", [*restore, "-t", "hdr", *face, "--set", "steps=many"]),
        ("fraction for a count", [*restore, "-t", "hdr", *face, "--set", "steps=2.5"]),
        ("no runs to average", [*restore, "-t", "hdr", *face, "--mean-of", "0"]),
        ("SPGD-only flag with another sampler", [*restore, "-t", "hdr", *face, "--sampler", "dps", "--inner-steps", "3"]),
        ("unknown operator parameter", [*restore, "-t", "hdr", *face, "--op", "gain=3"]),
        ("scale that does not divide the image", [*restore, "-t", "super_resolution", "--simulate", *face, "--op", "scale=3"]),
        ("inpainting fraction above 1", [*restore, "-t", "inpainting_random", "--simulate", *face, "--op", "fraction=1.5"]),
        ("non-linear blur without weights", [*restore, "-t", "nonlinear_blur", "--simulate", *face]),
        ("non-linear blur weights file missing", [*restore, "-t", "nonlinear_blur", "--simulate", *face,
                                                  "--op-weights", "GOPRO_wVAE.pth"]),
        ("CUDA device on a machine without one", [*restore, "-t", "hdr", *face, "--device", "cuda"]),
        ("device name that does not exist", [*restore, "-t", "hdr", *face, "--device", "gpu"]),
        ("batch size 0", [*restore, "-t", "hdr", "--simulate", *face, "--batch-size", "0"]),
        ("zero threads", [*restore, "-t", "hdr", *face, "--threads", "0"]),
        ("output path that is a file", ["restore", "-o", f["a_file"], *m, "-t", "hdr", "--simulate", *face, *FAST]),
        ("output folder that cannot be written", ["restore", "-o", "/sys/spgd_out", *m, "-t", "hdr", "--simulate",
                                                  *face, *FAST]),
        ("output folder holding an earlier run", ["restore", "-o", f["earlier_run"], *m, "-t", "hdr", "--simulate",
                                                  *face, *FAST]),
        ("a restore that blows up (lr 1e30)", [*restore, "-t", "hdr", "--simulate", *face, *FAST, "--lr", "1e30"]),
        ("bench: --data that is not a folder", ["bench", *m, "-t", "hdr", "--data", f["face.png"], "--out", out]),
        ("bench: --limit 0", ["bench", *m, "-t", "hdr", "--data", f["dupA"].rsplit("/", 1)[0], "--out", out,
                              "--limit", "0"]),
        ("bench: every image unreadable", ["bench", *m, "-t", "hdr", "--data", f["bad_data"], "--out", out + "_b",
                                           *FAST]),
        ("train: data folder that does not exist", ["train", "--data", "nowhere/", "--out", out]),
        ("train: unknown architecture", ["train", "--data", f["dupA"].rsplit("/", 1)[0], "--out", out,
                                         "--config", "huge"]),
        ("train: negative time limit", ["train", "--data", f["empty"], "--out", out, "--time-limit", "-1"]),
        ("export: folder without checkpoints", ["export", f["empty"], out + "/x.safetensors"]),
        ("sample: zero images", ["sample", *m, "--n", "0", "--out", out]),
        ("fid: folder that does not exist", ["fid", "nowhere/", f["empty"]]),
        ("tasks: unknown task", ["tasks", "deblurr"]),
    ]


def run(args: list[str]) -> tuple[int, list[str], bool]:
    """(exit code, the non-empty stderr lines without progress bars, whether a traceback escaped)."""
    err = io.StringIO()
    traced = False
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(args)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:  # a bug: the table says so
            traceback.print_exc()
            code, traced = -1, True
    lines = [line.rsplit("\r", 1)[-1].strip() for line in err.getvalue().split("\n")]
    shown = [line for line in lines if line and not line.startswith(NOTICES) and not PROGRESS_BAR.search(line)]
    return code, shown, traced or any("Traceback" in line for line in lines)


def markdown(rows: list[tuple[str, list[str], int, list[str], bool]], model: str) -> str:
    out = ["# What spgd answers to bad input", "",
           f"Generated by `python bench/bad_inputs.py` (model: `{Path(model).name}`; paths shortened). Each row "
           "is one command line; the answer is everything printed on stderr apart from progress bars and the line "
           "naming the loaded models. "
           "Exit codes: 2 for a problem with the input, 1 for a run whose images failed.", "",
           "| # | input | exit | message |", "|---|---|---|---|"]
    for i, (what, args, code, lines, _) in enumerate(rows, 1):
        message = " / ".join(lines).replace("|", "\\|")
        out.append(f"| {i} | {what} (`spgd {args[0]}`) | {code} | {message} |")
    return "\n".join(out + ["", *measured_inputs()]) + "\n"


def measured_inputs() -> list[str]:
    """The section on what a measured image (no --simulate) must come with, per task, asked of its operator."""
    from spgd.operators import make_operator, operator_class
    from spgd.tasks import load_task, task_names

    out = ["## What a measured image must come with", "",
           "A measured image (no `--simulate`) is restored only with what it cannot tell given: a preset's value of "
           "such a parameter is for simulating, and spgd never runs it silently on a real photo. What it tells is "
           "estimated from it (or read from the file) unless given.", "",
           "| task | must be given | one of these must be given | estimated from the image |", "|---|---|---|---|"]
    for task in task_names():
        params = dict(load_task(task)["operator"])
        cls = operator_class(params["name"])
        if not cls.image_measurement:
            continue
        try:
            needed = ", ".join(f"`--{key}`" for key in make_operator(**params).unset_parameters())
        except ValueError as exc:  # an operator that needs a file before anything (weights)
            needed = str(exc).split(":")[0]
        assumed = [f"`--op {key}`" for key in cls.assumed_parameters]
        assumed += [f"`--{key}`" for key in cls.file_parameters] if assumed else []
        out.append(f"| {task} | {needed or '-'} | {', '.join(assumed) or '-'} | {', '.join(cls.measured_parameters) or '-'} |")
    return out


def main_script() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "errors.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = str(TINY) if TINY.is_file() else "builtin:faces64"
    rows, bad = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = prepare(folder)
        out = str(folder / "out")
        for what, case in cases(files, model, out):
            code, lines, traced = run(case)
            shown = [line.replace(tmp + "/", "").replace(str(ROOT.parent) + "/", "../") for line in lines]
            rows.append((what, case, code, shown, traced))
            errors = [line for line in lines if ": error: " in line]
            if traced or code == 0 or len(errors) != 1:
                bad.append(f"{what}: exit {code}, {len(errors)} error line(s){', traceback' if traced else ''}")
    args.out.write_text(markdown(rows, model))
    print(f"{len(rows)} cases -> {args.out}")
    for problem in bad:
        print(f"NOT ONE CLEAR LINE: {problem}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main_script())
