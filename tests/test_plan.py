"""The planner: one request -> groups of images of one restored size, each with its own model.

The two bugs the redesign fixed: a folder mixing a 64x64 face and a photo was restored with the first file's
prior, and a measured 32x32 face with `--op scale=2` got the natural prior (its clean size was computed from
the preset's scale 4). Built-in priors are tiny random ones shipped into a temporary folder (no ../shared)."""
from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from spgd.cli import main
from spgd.plan import Request, make_plan

from .conftest import write_face_like
from .test_priors import _ship_tiny_priors

FAST = ["--steps", "2", "--set", "inner_steps=1", "mean_of=1", "--threads", "1"]


@pytest.fixture
def builtins(tmp_path, monkeypatch):
    from spgd.priors import loaders

    folder = tmp_path / "builtin"
    folder.mkdir()
    _ship_tiny_priors(folder, ["faces64", "natural"])
    monkeypatch.setattr(loaders, "BUILTIN_DIR", folder)
    return folder


def photo(path, width, height):
    write_face_like(path, size=max(width, height), seed=3)
    Image.open(path).crop((0, 0, width, height)).save(path)
    return path


def test_a_mixed_folder_restores_each_image_at_its_size_with_its_prior(builtins, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_face_like(folder / "face.png")
    photo(folder / "photo.png", 192, 128)
    plan = make_plan(Request(task="super_resolution", simulate=True), sorted(folder.iterdir()))
    assert [(g.size, g.spec.model_name, [plan.inputs[i].name for i in g.indices]) for g in plan.groups] == [
        ((64, 64), "builtin:faces64", ["face.png"]), ((128, 192), "builtin:natural", ["photo.png"])]
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(folder), "-o", str(tmp_path / "out"),
                 *FAST]) == 0
    err = capsys.readouterr().err
    assert "builtin:faces64" in err and "[1 image(s) at 64x64]" in err and "[1 image(s) at 192x128]" in err
    images = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]
    assert {name: (e["model"], e["width"], e["height"]) for name, e in images.items()} == {
        "face.png": ("builtin:faces64", 64, 64), "photo.png": ("builtin:natural", 192, 128)}
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert [(g["model"], g["images"]) for g in config["groups"]] == [("builtin:faces64", ["face.png"]),
                                                                      ("builtin:natural", ["photo.png"])]
    assert Image.open(tmp_path / "out" / "photo.png").size == (192, 128)


def test_a_measured_low_res_face_at_scale_2_restores_at_64x64_with_the_face_prior(builtins, tmp_path):
    small = write_face_like(tmp_path / "small.png", size=32)
    plan = make_plan(Request(task="super_resolution", operator={"scale": 2}), [small])
    [group] = plan.groups
    assert group.size == (64, 64) and group.spec.model_name == "builtin:faces64"
    assert group.spec.operator["scale"] == 2
    assert main(["restore", "-t", "super_resolution", "--op", "scale=2", "-i", str(small), "-o",
                 str(tmp_path / "out"), *FAST]) == 0
    assert Image.open(tmp_path / "out" / "small.png").size == (64, 64)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]["small.png"]["model"] == \
        "builtin:faces64"


def test_one_named_model_serves_every_size_and_is_loaded_once(tmp_path, tiny_prior_path):
    paths = [write_face_like(tmp_path / "a.png"), photo(tmp_path / "b.png", 96, 64), write_face_like(tmp_path / "c.png")]
    plan = make_plan(Request(task="super_resolution", model=str(tiny_prior_path), simulate=True), paths)
    assert [(g.size, g.indices) for g in plan.groups] == [((64, 64), [0, 2]), ((64, 96), [1])]
    assert plan.groups[0].spec is plan.groups[1].spec and len(plan.specs) == 1


def test_resize_brings_every_image_to_the_models_size_and_unreadable_files_are_skipped_when_asked(
        tmp_path, tiny_prior_path):
    paths = [photo(tmp_path / "b.png", 96, 64), tmp_path / "broken.png"]
    paths[1].write_bytes(b"\x89PNG not really")
    plan = make_plan(Request(task="super_resolution", model=str(tiny_prior_path), simulate=True), paths,
                     skip_unreadable=True)
    assert list(plan.skipped) == [1] and "broken.png" in plan.skipped[1]
    with pytest.raises(ValueError, match="broken.png"):
        make_plan(Request(task="super_resolution", model=str(tiny_prior_path), simulate=True), paths)
    resized = make_plan(Request(task="super_resolution", model=str(tiny_prior_path), simulate=True, resize=True),
                        paths[:1])
    assert resized.groups[0].size == (64, 64)


def test_trained_weights_are_refused_outside_their_domain_unless_named(tmp_path, monkeypatch):
    """The built-in DiffIR deblurring weights are for 64x64 aligned faces: a photo is refused in one line that
    names them and --model; the same file named by the user runs."""
    from spgd.diffir import model as diffir_model

    from .test_diffir import _weights

    shipped = tmp_path / "builtin"
    shipped.mkdir()
    (shipped / "faces64_sr4.safetensors").write_bytes(_weights(tmp_path, image_size=64).read_bytes())
    monkeypatch.setattr(diffir_model, "BUILTIN_DIR", shipped)
    big = photo(tmp_path / "photo.png", 96, 64)
    with pytest.raises(ValueError) as info:
        make_plan(Request(task="super_resolution", sampler="diffir", simulate=True), [big])
    message = str(info.value)
    assert "\n" not in message and "builtin:diffir-faces64_sr4 (64x64)" in message and "--model" in message
    assert "a 96x64 image" in message
    named = make_plan(Request(task="super_resolution", sampler="diffir", simulate=True,
                              model=str(shipped / "faces64_sr4.safetensors")), [big])
    assert named.groups[0].size == (64, 96)
