"""`spgd restore` at the images' own sizes: clean and measured inputs of any size, masks of the image's size,
batches of mixed sizes, and the 64x64 path unchanged (the README's first command)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spgd import io
from spgd.cli import main
from spgd.plan import Request, make_plan

from .conftest import write_face_like

FAST = ["--steps", "2", "--inner-steps", "1", "--set", "sigma_max=5.0"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def photo(path, width: int, height: int, seed: int = 0):
    """A smooth RGB image of width x height (a crop of a square `write_face_like` image)."""
    side = max(width, height)
    write_face_like(path, size=side, seed=seed)
    Image.open(path).crop((0, 0, width, height)).save(path)
    return path


def restore(args, model) -> int:
    return main(["restore", "-m", str(model), *args, *FAST])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=int)


def test_clean_super_resolution_is_restored_at_the_image_size(tmp_path, tiny_prior_path):
    image = photo(tmp_path / "wide.png", 200, 136)
    out = tmp_path / "out"
    assert restore(["-t", "super_resolution", "--simulate", "-i", str(image), "-o", str(out)], tiny_prior_path) == 0
    assert Image.open(out / "wide.png").size == (200, 136)
    assert Image.open(out / "wide_measurement.png").size == (50, 34)
    grid = Image.open(out / "grid.png")
    assert grid.height > 136 * 2 and grid.width > 3 * 200 * 2  # three panels, each enlarged 2x (short side >= 256)
    entry = json.loads((out / "metrics.json").read_text())["images"]["wide.png"]
    assert (entry["width"], entry["height"]) == (200, 136) and np.isfinite(entry["psnr"])
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["restored_sizes"] == {"wide.png": "200x136"} and config["resize"] is False


def test_random_shift_tiling_from_the_command_line_is_recorded_and_differs_from_the_blend(tmp_path, tiny_prior_path):
    image = photo(tmp_path / "wide.png", 200, 136)
    for tiling in ("blend", "shift"):
        assert restore(["-t", "super_resolution", "--simulate", "-i", str(image), "-o", str(tmp_path / tiling),
                        "--tiling", tiling], tiny_prior_path) == 0
        assert yaml.safe_load((tmp_path / tiling / "config.yaml").read_text())["tiling"] == tiling
    shifted = pixels(tmp_path / "shift" / "wide.png")
    assert shifted.shape == (136, 200, 3) and not np.array_equal(shifted, pixels(tmp_path / "blend" / "wide.png"))


def test_clean_inpainting_with_a_mask_of_the_image_size(tmp_path, tiny_prior_path):
    image = photo(tmp_path / "wide.png", 200, 136)
    mask = np.full((136, 200), 255, np.uint8)
    mask[30:90, 120:180] = 0  # a hole the 64x64 prior's size could not hold
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    assert restore(["-t", "inpainting_box", "--simulate", "-i", str(image), "--mask", str(tmp_path / "mask.png"),
                    "-o", str(out)], tiny_prior_path) == 0
    restored, measured = pixels(out / "wide.png"), pixels(out / "wide_measurement.png")
    assert restored.shape == measured.shape == (136, 200, 3)
    known = mask == 255
    assert np.array_equal(restored[known], measured[known])  # the known pixels come back as measured
    hole = measured[~known] - 127.5  # y = 0 plus noise (sigma 0.05 of [-1, 1]: 6.4 of 255) where the mask says
    assert abs(hole.mean()) < 2 and hole.std() < 10 < measured[known].std()


def test_measured_low_resolution_image_becomes_four_times_its_size(tmp_path, tiny_prior_path):
    low = photo(tmp_path / "low.png", 30, 20)
    out = tmp_path / "out"
    assert restore(["-t", "super_resolution", "-i", str(low), "-o", str(out)], tiny_prior_path) == 0
    assert Image.open(out / "low.png").size == (120, 80)
    entry = json.loads((out / "metrics.json").read_text())["images"]["low.png"]
    assert (entry["width"], entry["height"]) == (120, 80) and "psnr" not in entry


def test_mixed_sizes_in_one_batch_equal_one_by_one_runs(tmp_path, tiny_prior_path):
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"a.png": (64, 64), "b.png": (96, 72), "c.png": (64, 64), "d.png": (96, 72)}
    for k, (name, (width, height)) in enumerate(sizes.items()):
        photo(folder / name, width, height, seed=k)
    batched = tmp_path / "batched"
    assert restore(["-t", "super_resolution", "--simulate", "-i", str(folder), "-o", str(batched),
                    "--batch-size", "3"], tiny_prior_path) == 0
    metrics = json.loads((batched / "metrics.json").read_text())
    assert list(metrics["images"]) == list(sizes)  # input order, though a and c went in one batch, b and d in another
    for k, name in enumerate(sizes):
        alone = tmp_path / f"alone_{k}"
        assert restore(["-t", "super_resolution", "--simulate", "-i", str(folder / name), "-o", str(alone),
                        "--seed", str(k)], tiny_prior_path) == 0  # image k of the folder has seed 0 + k
        a, b = pixels(batched / name), pixels(alone / name)
        assert a.shape == (sizes[name][1], sizes[name][0], 3)
        assert np.abs(a - b).max() <= 1  # identical up to float rounding in the last 8-bit step
        assert pixels(batched / f"{Path(name).stem}_measurement.png").tolist() == \
            pixels(alone / f"{Path(name).stem}_measurement.png").tolist()  # the same seeded measurement


def test_a_64x64_image_restores_the_same_with_and_without_resize(tmp_path, tiny_prior_path):
    face = write_face_like(tmp_path / "face.png")
    for flags, out in (([], "own"), (["--resize"], "resized")):
        assert restore(["-t", "super_resolution", "--simulate", "-i", str(face), "-o", out, *flags],
                       tiny_prior_path) == 0
    assert (tmp_path / "own" / "face.png").read_bytes() == (tmp_path / "resized" / "face.png").read_bytes()
    own, resized = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("own", "resized"))
    assert own == resized


def test_resize_still_brings_any_image_to_the_prior_size(tmp_path, tiny_prior_path):
    image = photo(tmp_path / "odd.png", 201, 136)
    assert restore(["-t", "super_resolution", "--simulate", "-i", str(image), "--resize", "-o", "out"],
                   tiny_prior_path) == 0
    assert Image.open(tmp_path / "out" / "odd.png").size == (64, 64)


def run_error(args, model, capsys) -> str:
    assert restore(args, model) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(lines) == 1
    return lines[0]


def test_sizes_the_run_cannot_take_are_refused_up_front_in_one_line(tmp_path, tiny_prior_path, capsys):
    odd = photo(tmp_path / "odd.png", 201, 136)
    assert run_error(["-t", "super_resolution", "--simulate", "-i", str(odd), "-o", "o1"], tiny_prior_path, capsys) \
        == (f"spgd restore: error: {odd}: super_resolution: image size 201x136 (WxH) is not divisible by the scale 4; "
            "pass --resize to restore it at the model's 64x64, or crop it first")
    wide = photo(tmp_path / "wide.png", 200, 136)
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(tmp_path / "mask.png")
    assert run_error(["-t", "inpainting_box", "--simulate", "-i", str(wide), "--mask", str(tmp_path / "mask.png"),
                      "-o", "o2"], tiny_prior_path, capsys) == (
        f"spgd restore: error: mask file {tmp_path / 'mask.png'} is 64x64 pixels (WxH), expected 200x136, "
        f"the size {wide} is restored at (a mask is of the image's size)")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()  # refused before any work


def test_the_plan_groups_images_by_size_in_input_order(tmp_path, tiny_prior_path):
    a, b = (64, 64), (72, 96)
    paths = [photo(tmp_path / f"{k}.png", *size[::-1]) for k, size in enumerate([a, b, a, a, b])]
    plan = make_plan(Request(task="super_resolution", model=str(tiny_prior_path), simulate=True), paths)
    assert [(g.size, g.indices) for g in plan.groups] == [(a, [0, 2, 3]), (b, [1, 4])]
    assert len(plan.specs) == 1  # one named model: one resolved run for both sizes


def test_image_size_reads_the_upright_size_from_the_header(tmp_path):
    rgb = np.zeros((6, 4, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # a quarter turn: displayed 6 wide, 4 high
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    assert io.image_size(tmp_path / "rotated.png") == (4, 6) == tuple(io.read_image(tmp_path / "rotated.png").pixels.shape[1:])
    assert io.image_size(tmp_path / "plain.png") == (6, 4)


def test_demo_coffee_is_the_scikit_image_photo_at_its_size():
    from skimage import data

    from spgd.demo import resolve_input

    path = resolve_input("demo:coffee")
    assert io.image_size(path) == (400, 600)
    assert np.array_equal(io.to_uint8(io.load_image(path)), data.coffee())


def test_without_a_model_a_photo_gets_the_natural_prior_and_a_64x64_face_the_face_prior(tmp_path, monkeypatch, capsys):
    from spgd.priors import loaders

    from .test_priors import _ship_tiny_priors

    monkeypatch.setattr(loaders, "BUILTIN_DIR", tmp_path / "builtin")
    (tmp_path / "builtin").mkdir()
    _ship_tiny_priors(tmp_path / "builtin", ["faces64", "natural"])
    wide, face = photo(tmp_path / "wide.png", 96, 72), photo(tmp_path / "face.png", 64, 64)
    for image, chosen in ((wide, "builtin:natural"), (face, "builtin:faces64")):
        out = tmp_path / image.stem
        assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(image), "-o", str(out), *FAST]) == 0
        assert yaml.safe_load((out / "config.yaml").read_text())["model"] == chosen
    err = capsys.readouterr().err
    assert "chosen for a 96x72 image, not a 64x64 face" in err and "chosen for 64x64 faces" in err
