"""`spgd train | export | sample`: dataset preparation, the training loop, exact resume, export, sampling."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open

from spgd import load_prior
from spgd.cli import main
from spgd.io import center_crop_resize
from spgd.priors import build_network
from spgd.priors.adm_unet import ADMConfig, ADMUNet
from spgd.priors.presets import ARCHITECTURES
from spgd.priors.vp import VPDenoiser
from spgd.sample import sample
from spgd.train import (
    MAX_EXPORT_BYTES,
    TrainConfig,
    export_weights,
    holdout_list_path,
    latest_checkpoint,
    model_config,
    prepare_dataset,
    train,
)

TINY = dict(num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="",
            num_head_channels=32, dropout=0.0)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (128, 128, 128), (0, 0, 0), (255, 255, 255)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def constant_npy(tmp_path_factory):
    """Constant-colour 16x16 images: a trivially learnable dataset."""
    colours = np.array(COLOURS, dtype=np.uint8)
    path = tmp_path_factory.mktemp("data") / "colours.npy"
    np.save(path, np.broadcast_to(colours[:, :, None, None], (len(COLOURS), 3, 16, 16)).copy())
    return path


def tiny_config(data, out, **kw) -> TrainConfig:
    settings = dict(size=16, model=TINY, batch_size=16, lr=1e-3, warmup=0, ema=0.9, grid_every=0,
                    ckpt_every=0, log_every=1, workers=0, device="cpu")
    return TrainConfig(data=str(data), out=str(out), **{**settings, **kw})


@pytest.fixture(scope="module")
def trained(constant_npy, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train(tiny_config(constant_npy, out, steps=40, grid_every=40, grid_n=4, grid_steps=2),
                 progress=False), out


def test_prepare_dataset_crops_resizes_and_holds_out(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = [(48, 16), (16, 40), (20, 20), (33, 17), (64, 64), (16, 16)] * 2  # (W, H)
    for i, (w, h) in enumerate(sizes):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.arange(w)[None, :] * 255 // w  # a ramp, so crop offsets show
        img[..., 1] = i * 20
        Image.fromarray(img).save(folder / f"img_{i:02d}.png")
    wide = np.zeros((16, 48, 3), np.uint8)
    wide[:, 16:32] = (0, 200, 0)  # only the centre third is green: the centre crop is all green
    Image.fromarray(wide).save(folder / "img_00.png")

    out = tmp_path / "cache" / "data.npy"
    array = prepare_dataset(folder, 16, out, exclude_last=3)
    assert array.dtype == np.uint8 and array.shape == (9, 3, 16, 16)
    assert np.array_equal(np.load(out), array)
    assert (array[0, 1] == 200).all() and (array[0, [0, 2]] == 0).all()
    for i in range(9):
        with Image.open(folder / f"img_{i:02d}.png") as img:
            expected = np.asarray(center_crop_resize(img.convert("RGB"), (16, 16)))
        assert np.array_equal(array[i], expected.transpose(2, 0, 1))
    assert holdout_list_path(out).read_text().split() == ["img_09.png", "img_10.png", "img_11.png"]
    assert json.loads(out.with_suffix(".json").read_text())["exclude_last"] == 3
    with pytest.raises(ValueError, match="hold out"):
        prepare_dataset(folder, 16, out, exclude_last=12)


def test_training_reduces_loss_and_writes_grid(trained):
    result, out = trained
    losses = [loss for _, loss in result["losses"]]
    assert result["step"] == 40 and len(losses) == 40
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:5])
    assert (out / "samples" / "step_0000040.png").is_file()
    assert result["checkpoint"] == latest_checkpoint(out) == out / "checkpoints" / "ckpt_0000040.pt"
    assert (out / "loss.csv").read_text().count("\n") == 40
    prior = load_prior(result["checkpoint"])  # a training checkpoint is a prior (its EMA weights)
    assert prior.image_size == 16


def test_resume_matches_uninterrupted_run(constant_npy, tmp_path):
    kw = dict(model={**TINY, "dropout": 0.1}, batch_size=4, ema=0.5)
    whole = train(tiny_config(constant_npy, tmp_path / "whole", steps=6, **kw), progress=False)
    first = train(tiny_config(constant_npy, tmp_path / "split", steps=3, **kw), progress=False)
    assert first["step"] == 3
    second = train(tiny_config(constant_npy, tmp_path / "split", steps=6, **kw), resume=True, progress=False)
    assert second["step"] == 6 and [s for s, _ in second["losses"]] == [4, 5, 6]
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(second["checkpoint"], weights_only=True)
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    for p, q in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert torch.equal(a["rng"]["data"], b["rng"]["data"]) and torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert [loss for _, loss in whole["losses"][3:]] == [loss for _, loss in second["losses"]]


def test_time_limit_stops_with_a_checkpoint_that_resume_continues(constant_npy, tmp_path):
    stopped = train(tiny_config(constant_npy, tmp_path / "run", steps=5, time_limit=1e-6), progress=False)
    assert stopped["step"] < 5 and stopped["checkpoint"] == latest_checkpoint(tmp_path / "run")
    assert torch.load(stopped["checkpoint"], weights_only=True)["step"] == stopped["step"]
    finished = train(tiny_config(constant_npy, tmp_path / "run", steps=5), resume=True, progress=False)
    assert finished["step"] == 5 and finished["steps_per_second"] > 0
    whole = train(tiny_config(constant_npy, tmp_path / "whole", steps=5), progress=False)
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(finished["checkpoint"], weights_only=True)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])  # stopping changed nothing
    with pytest.raises(ValueError, match="time-limit must be >= 0"):
        train(tiny_config(constant_npy, tmp_path / "bad", steps=5, time_limit=-1), progress=False)


def test_export_is_fp16_safetensors_that_load_prior_reads(trained, tmp_path):
    result, _ = trained
    out = tmp_path / "prior.safetensors"
    size = export_weights(result["checkpoint"], out)
    assert size == out.stat().st_size < MAX_EXPORT_BYTES
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["config"])["num_channels"] == 32
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    prior = load_prior(out)
    state = torch.load(result["checkpoint"], weights_only=True)
    reference = ADMUNet(ADMConfig.from_dict(state["config"]))
    reference.load_state_dict(state["ema"])
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = prior.denoise(x, 1.0)
        assert torch.allclose(d, VPDenoiser(reference).denoise(x, 1.0), atol=1e-2)
    assert torch.isfinite(d).all()


def test_an_exported_file_exports_again_with_new_recommendations_and_the_same_weights(trained, tmp_path, capsys):
    """Weights whose training folder is gone (the shipped ones) get new recommended settings by exporting
    their file again: same tensors, config and step; the recommendations replaced."""
    result, _ = trained
    (tmp_path / "old.yaml").write_text("samplers: {spgd: {steps: 3}}\n")
    (tmp_path / "new.yaml").write_text("samplers: {spgd: {steps: 4, antithetic: true}}\n")
    assert main(["export", str(result["checkpoint"]), str(tmp_path / "a.safetensors"), "--recommended",
                 str(tmp_path / "old.yaml")]) == 0
    assert main(["export", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--recommended",
                 str(tmp_path / "new.yaml")]) == 0
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as a, \
            safe_open(str(tmp_path / "b.safetensors"), framework="pt") as b:
        assert sorted(a.keys()) == sorted(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
        old, new = a.metadata(), b.metadata()
    assert {k: v for k, v in old.items() if k != "recommended"} == {k: v for k, v in new.items() if k != "recommended"}
    assert load_prior(tmp_path / "b.safetensors").recommended("super_resolution", "spgd") == {"steps": 4, "antithetic": True}
    assert main(["export", str(tmp_path / "b.safetensors"), str(tmp_path / "c.safetensors")]) == 0  # kept without YAML
    assert load_prior(tmp_path / "c.safetensors").recommended("super_resolution", "spgd") == {"steps": 4, "antithetic": True}
    (tmp_path / "other.safetensors").write_bytes(b"not safetensors")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "other.safetensors"), str(tmp_path / "d.safetensors")]) == 2
    assert "other.safetensors: not a safetensors file written by spgd export" in capsys.readouterr().err


def test_edm_objective_trains_a_prior_that_loads_as_edm_and_excludes_listed_images(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.new("RGB", (16, 16), colour).save(folder / f"{i}.png")
    (tmp_path / "val.txt").write_text("0.png\n1.png\n")
    cfg = tiny_config(folder, tmp_path / "run", steps=60, objective="edm", exclude=(str(tmp_path / "val.txt"),))
    result = train(cfg, progress=False)
    assert np.load(tmp_path / "run" / "data_16.npy").shape == (len(COLOURS) - 2, 3, 16, 16)
    losses = [loss for _, loss in result["losses"]]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    export_weights(result["checkpoint"], tmp_path / "edm.safetensors")
    prior = load_prior(tmp_path / "edm.safetensors")
    assert type(prior).__name__ == "EDMDenoiser" and "EDM-preconditioned" in prior.description
    with pytest.raises(ValueError, match="trained with objective 'edm'"):
        train(tiny_config(folder, tmp_path / "run", steps=61, exclude=cfg.exclude), resume=True, progress=False)


def test_init_from_exported_weights_keeps_them_and_the_step_with_a_fresh_optimizer(trained, constant_npy, tmp_path):
    result, _ = trained
    export_weights(result["checkpoint"], tmp_path / "snapshot.safetensors", dtype=torch.float32)
    exported = load_prior(tmp_path / "snapshot.safetensors")
    same = train(tiny_config(constant_npy, tmp_path / "again", steps=40, init=str(tmp_path / "snapshot.safetensors")),
                 progress=False)
    state = torch.load(same["checkpoint"], weights_only=True)
    assert same["step"] == state["step"] == 40 and state["warmup_from"] == 40 and not state["optimizer"]["state"]
    assert all(torch.equal(v, exported.network.state_dict()[k]) for k, v in state["ema"].items())
    more = train(tiny_config(constant_npy, tmp_path / "again", steps=44, init=str(tmp_path / "snapshot.safetensors")),
                 resume=True, progress=False)  # a checkpoint now exists: it wins over --init
    assert more["step"] == 44 and [s for s, _ in more["losses"]] == [41, 42, 43, 44]
    with pytest.raises(ValueError, match="trained with objective 'eps', not 'edm'"):
        train(tiny_config(constant_npy, tmp_path / "edm", steps=41, objective="edm",
                          init=str(tmp_path / "snapshot.safetensors")), progress=False)
    with pytest.raises(FileNotFoundError, match="--init .*missing.safetensors: no such file"):
        train(tiny_config(constant_npy, tmp_path / "x", steps=41, init=str(tmp_path / "missing.safetensors")),
              progress=False)


def test_cli_train_from_folder_resume_and_export(tmp_path, capsys):
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (24 + 4 * i, 20), COLOURS[i]).save(folder / f"{i}.png")
    out = tmp_path / "run"
    args = ["train", "--data", str(folder), "--out", str(out), "--size", "16", "--holdout", "1",
            "--config", json.dumps(TINY), "--batch-size", "2", "--warmup", "0", "--grid-every", "0",
            "--device", "cpu", "--workers", "0"]
    assert main([*args, "--steps", "2"]) == 0
    assert np.load(out / "data_16.npy").shape == (4, 3, 16, 16)
    assert (out / "data_16_holdout.txt").read_text() == "4.png\n"
    assert main([*args, "--steps", "3", "--resume"]) == 0
    assert "trained to step 3" in capsys.readouterr().out
    assert main(["export", str(out), str(tmp_path / "w.safetensors")]) == 0
    assert load_prior(tmp_path / "w.safetensors").image_size == 16
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "x.safetensors")]) == 2


def test_adm64_preset_is_about_8m_parameters_and_fits_16_mib():
    network = build_network(model_config("adm64", 64), "meta")
    count = sum(p.numel() for p in network.parameters())
    assert 7.5e6 < count < 8.4e6 and 2 * count < MAX_EXPORT_BYTES - 2 ** 17
    assert ARCHITECTURES["adm64"]["learn_sigma"] is False


def _pngs(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_sample_cli_is_deterministic_and_batch_size_independent(tiny_prior_path, tmp_path):
    common = ["sample", "--model", str(tiny_prior_path), "--n", "3", "--steps", "3", "--seed", "5"]
    assert main([*common, "--out", str(tmp_path / "a"), "--batch-size", "3"]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--batch-size", "2"]) == 0
    a, b = _pngs(tmp_path / "a" / "images"), _pngs(tmp_path / "b" / "images")
    assert sorted(a) == ["000000.png", "000001.png", "000002.png"]  # samples only: a folder for FID
    assert (tmp_path / "a" / "grid.png").is_file()
    assert all(np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 1 for k in a)
    assert not np.array_equal(a["000000.png"], a["000001.png"])


def test_sample_solvers_and_per_image_seeds(tiny_prior):
    for solver in ("euler", "ancestral"):
        x = sample(tiny_prior, 2, seed=[3, 4], steps=2, solver=solver)
        one = sample(tiny_prior, 1, seed=4, steps=2, solver=solver)
        assert x.shape == (2, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
        assert torch.allclose(x[1], one[0], atol=1e-3)  # float32 convolutions vary slightly with batch size
    with pytest.raises(ValueError, match="solver"):
        sample(tiny_prior, 1, solver="dpm")


def test_exported_recommendations_apply_under_the_overrides_and_are_written_down(trained, tmp_path, capsys):
    result, _ = trained
    (tmp_path / "rec.yaml").write_text("samplers: {spgd: {sigma_max: 20.0, steps: 3, inner_steps: 1}}\n"
                                       "tasks: {hdr: {spgd: {lr: 0.25}}}\n")
    assert main(["export", str(result["checkpoint"]), str(tmp_path / "p.safetensors"),
                 "--recommended", str(tmp_path / "rec.yaml")]) == 0
    prior = load_prior(tmp_path / "p.safetensors")
    assert prior.recommended("hdr", "spgd") == {"sigma_max": 20.0, "steps": 3, "inner_steps": 1, "lr": 0.25}
    assert prior.recommended("super_resolution", "dps") == {}
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["restore", "-t", "hdr", "--simulate", "-i", str(tmp_path / "x.png"), "-m", str(tmp_path / "p.safetensors"),
                 "-o", str(out), "--set", "steps=2"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["recommended_by_the_prior"] == {"sigma_max": 20.0, "steps": 3, "inner_steps": 1, "lr": 0.25}
    assert {k: config["sampler_settings"][k] for k in ("sigma_max", "steps", "inner_steps", "lr")} == \
        {"sigma_max": 20.0, "steps": 2, "inner_steps": 1, "lr": 0.25}  # --set wins over the recommendation
    (tmp_path / "bad.yaml").write_text("samplers: {spgd: {momentum: 1}}\n")
    assert main(["export", str(result["checkpoint"]), str(tmp_path / "q.safetensors"),
                 "--recommended", str(tmp_path / "bad.yaml")]) == 2
    assert "spgd has no setting 'momentum'" in capsys.readouterr().err
