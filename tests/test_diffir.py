"""DiffIR: the networks' shapes and strides, the IPR schedule, stage-2 initialisation, the restorer at any
size, seeded determinism, training resume, weight files, and the CLI end to end on a tiny configuration."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import spgd
from spgd import make_operator
from spgd.cli import main
from spgd.diffir.model import DiffIRModel, choose_builtin, degraded_input, load_diffir, pad_to_stride, read_metadata
from spgd.diffir.network import DiffIRConfig, DiffIRS1, DiffIRS2, IPRSchedule
from spgd.diffir.train import DiffIRTrainConfig, build, export, latest_checkpoint, train
from spgd.io import save_image
from spgd.methods import builtin_model

TINY = {"dim": 8, "blocks": [1, 1, 1, 1], "refinement": 0, "heads": [1, 1, 2, 2], "cpen_feats": 4, "cpen_res": 1}


def tiny(head: str = "sr") -> DiffIRConfig:
    return DiffIRConfig(head=head, **TINY)


@pytest.mark.parametrize("head,lq_shape", [("sr", (2, 3, 8, 16)), ("residual", (2, 3, 32, 16)),
                                           ("inpaint", (2, 4, 16, 24))])
def test_network_shapes(head, lq_shape):
    torch.manual_seed(0)
    cfg = tiny(head)
    scale = 4 if head == "sr" else 1
    lq = torch.rand(lq_shape)
    gt = torch.rand(2, 3, lq_shape[2] * scale, lq_shape[3] * scale)
    s1, s2 = DiffIRS1(cfg), DiffIRS2(cfg)
    assert s1.ipr(lq, gt).shape == (2, cfg.ipr)
    assert s1(lq, gt).shape == gt.shape
    out, z = s2(lq, torch.randn(2, cfg.ipr))
    assert out.shape == gt.shape and z.shape == (2, cfg.ipr)


def test_schedule_coefficients_match_the_released_table():
    schedule = IPRSchedule(DiffIRConfig())
    # diffir.md section 1.5: beta = linspace(sqrt(0.1), sqrt(0.99), 4)^2, not linspace(0.1, 0.99)
    assert torch.allclose(schedule.betas, torch.tensor([0.1000, 0.2943, 0.5910, 0.9900]), atol=1e-4)
    assert torch.allclose(schedule.alphas_bar.sqrt(), torch.tensor([0.949, 0.797, 0.510, 0.051]), atol=1e-3)
    assert torch.allclose(schedule.coef1, torch.tensor([1.000, 0.765, 0.636, 0.506]), atol=1e-3)
    assert torch.allclose(schedule.coef2, torch.tensor([0.000, 0.230, 0.315, 0.074]), atol=1e-3)
    assert float(schedule.coef1[0]) == pytest.approx(1.0, abs=1e-6) and abs(float(schedule.coef2[0])) < 1e-7


def test_reverse_chain_is_deterministic_and_ends_on_the_last_x0():
    torch.manual_seed(0)
    s2 = DiffIRS2(tiny()).eval()
    lq, z = torch.rand(1, 3, 8, 8), torch.randn(1, s2.cfg.ipr)
    with torch.no_grad():
        condition = s2.condition(lq)
        manual = z
        for t in (3, 2, 1):
            manual = s2.schedule.coef1[t] * s2.denoise(manual, t, condition) + s2.schedule.coef2[t] * manual
        last_x0 = s2.denoise(manual, 0, condition)
        assert torch.allclose(s2.estimate_ipr(lq, z), last_x0, atol=1e-6)
        assert torch.equal(s2.estimate_ipr(lq, z), s2.estimate_ipr(lq, z))


def test_padding_to_the_stride_and_back():
    x = torch.rand(1, 3, 13, 21)
    padded, ph, pw = pad_to_stride(x, 8)
    assert padded.shape[-2:] == (16, 24) and (ph, pw) == (3, 3)
    assert torch.equal(padded[..., :13, :21], x)


def _clean_npy(tmp_path, n=6, size=32):
    gen = np.random.default_rng(0)
    data = (gen.random((n, 3, size, size)) * 255).astype(np.uint8)
    path = tmp_path / "clean.npy"
    np.save(path, data)
    return path


def _cfg(tmp_path, stage=1, out="s1", **kw):
    return DiffIRTrainConfig(data=str(_clean_npy(tmp_path)), out=str(tmp_path / out), stage=stage, model=dict(TINY),
                             batch_size=2, steps=4, ckpt_every=2, val_every=2, **kw)


def test_stage2_starts_from_every_stage1_dirformer_key(tmp_path):
    train(_cfg(tmp_path), progress=False)
    student, teacher = build(_cfg(tmp_path, stage=2, out="s2", teacher=str(tmp_path / "s1")))
    teacher_g, student_g = teacher.G.state_dict(), student.G.state_dict()
    assert teacher_g.keys() == student_g.keys() and len(student_g) > 50
    assert all(torch.equal(teacher_g[k], student_g[k]) for k in teacher_g)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_resume_equals_an_uninterrupted_run(tmp_path):
    straight = _cfg(tmp_path, out="straight")
    train(straight, progress=False)
    interrupted = _cfg(tmp_path, out="interrupted")
    interrupted.steps = 2
    train(interrupted, progress=False)
    interrupted.steps = 4  # the same run asked for more steps is a different schedule: refused
    with pytest.raises(ValueError, match="other settings"):
        train(interrupted, progress=False)
    # a stop by the time limit mid-run, then resume
    limited = _cfg(tmp_path, out="limited")
    train(limited, progress=False, time_limit=1e-9)
    assert torch.load(latest_checkpoint(limited.out), weights_only=False)["step"] == 1
    train(limited, progress=False)
    a = torch.load(latest_checkpoint(straight.out), weights_only=False)
    b = torch.load(latest_checkpoint(limited.out), weights_only=False)
    assert a["step"] == b["step"] == 4
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_a_lost_machine_resumes_from_the_small_exported_weights(tmp_path):
    """`--init`: a run whose checkpoints are gone starts from its exported EMA weights (fp32 here, so exactly)
    with their step count and a fresh optimizer; stage 2 takes an exported stage 1 as its teacher."""
    first = _cfg(tmp_path, out="lost")
    first.steps = 2
    train(first, progress=False)
    exported = export(tmp_path / "lost", tmp_path / "lost.safetensors", dtype=torch.float32)
    again = _cfg(tmp_path, out="again", init=str(exported))
    train(again, progress=False)
    state = torch.load(latest_checkpoint(again.out), weights_only=False)
    assert state["step"] == 4  # steps 3 and 4 were trained; 1 and 2 came with the weights
    lost = torch.load(latest_checkpoint(first.out), weights_only=False)
    assert state["cpu_seconds"] > read_metadata(exported)["cpu_hours"] * 3600  # the CPU time spent carried on
    with pytest.raises(ValueError, match="another stage or network"):
        train(_cfg(tmp_path, out="wrong", stage=2, teacher=str(exported), init=str(exported)), progress=False)
    student, teacher = build(_cfg(tmp_path, stage=2, out="s2", teacher=str(exported)))
    assert all(torch.equal(teacher.state_dict()[k], lost["ema"][k]) for k in lost["ema"])
    assert all(torch.equal(student.G.state_dict()[k], lost["ema"]["G." + k]) for k in student.G.state_dict())


def _weights(tmp_path, task="super_resolution", image_size=None):
    s1 = _cfg(tmp_path, task=task, out=f"{task}-s1")
    train(s1, progress=False)
    train(_cfg(tmp_path, task=task, stage=2, out=f"{task}-s2", teacher=s1.out), progress=False)
    return export(tmp_path / f"{task}-s2", tmp_path / f"{task}.safetensors", image_size=image_size)


def test_weight_file_round_trip_and_seeded_any_size_restore(tmp_path):
    path = _weights(tmp_path)
    model = load_diffir(path)
    meta = model.metadata
    assert meta["task"] == "super_resolution" and meta["stage"] == 2 and meta["steps"] == 4
    assert meta["operator"]["name"] == "super_resolution" and meta["config"]["dim"] == 8
    op = make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = torch.rand(2, 3, 13, 10) * 2 - 1  # not a multiple of the stride: padded and cropped back
    x = model.restore_measurement(op, y, seed=[3, 4])
    assert x.shape == (2, 3, 52, 40) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[1:], model.restore_measurement(op, y[1:], seed=[4]), atol=1e-5)  # per-image seeds
    assert not torch.equal(x, model.restore_measurement(op, y, seed=[5, 6]))  # the seed draws z_T


def test_weights_refuse_another_task(tmp_path):
    model = load_diffir(_weights(tmp_path))
    with pytest.raises(ValueError, match="super_resolution.*cannot restore a inpainting"):
        model.restore_measurement(make_operator("inpainting", kind="random"), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="4x super_resolution cannot restore a 2x"):
        model.restore_measurement(make_operator("super_resolution", scale=2), torch.zeros(1, 3, 16, 16))


def test_inpainting_input_and_composite_keep_the_known_pixels(tmp_path):
    path = _weights(tmp_path, task="inpainting_random")
    model = load_diffir(path)
    op = make_operator("inpainting", kind="random", fraction=0.5)
    clean = torch.rand(1, 3, 16, 16) * 2 - 1
    y = op.measure(clean, [torch.Generator().manual_seed(0)])
    lq = degraded_input(model.cfg, op, y)
    known = op.A(torch.ones_like(y))[:, :1]
    assert torch.equal(lq[:, 3:], 1 - known)
    x = model.restore_measurement(op, y)
    kept = known.expand_as(x).bool()
    assert torch.allclose(x[kept], y.clamp(-1, 1)[kept], atol=1e-6)


def test_fill_holes_is_close_to_skimage_biharmonic_and_keeps_what_is_known():
    """On a smooth image with 80% of its pixels missing (on faces the two score alike: 25.40 against 25.39 dB
    on 10 tuning faces; its 150 steps do not converge as far as skimage's exact solve on smooth images)."""
    from skimage.restoration import inpaint_biharmonic

    from spgd.diffir.model import fill_holes

    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(48, 48), mode="bicubic",
                                             align_corners=False).clamp(0, 1)
    known = (torch.rand(1, 1, 48, 48, generator=g) < 0.2).float()
    filled = fill_holes(smooth, known)
    assert torch.equal(filled[known.expand_as(filled).bool()], smooth[known.expand_as(smooth).bool()])
    peer = inpaint_biharmonic(smooth[0].permute(1, 2, 0).numpy(), (known[0, 0] == 0).numpy(), channel_axis=-1)
    peer = torch.from_numpy(peer).permute(2, 0, 1).float()[None]
    from spgd.metrics import psnr

    to_peer, to_truth = psnr(filled, peer), psnr(filled, smooth)
    assert to_peer > 38 and to_truth > 35, (to_peer, to_truth)  # measured: 40.7 and 36.7 (the peer: 42.8)
    torch.testing.assert_close(fill_holes(torch.full((1, 3, 8, 8), 0.3), known[..., :8, :8]),
                               torch.full((1, 3, 8, 8), 0.3), rtol=0, atol=1e-6)  # a constant stays constant


def test_the_filled_inpainting_head_is_a_residual_over_the_fill():
    cfg = DiffIRConfig(head="inpaint", fill=True, **TINY)
    net = DiffIRS1(cfg).G  # the DIRformer
    op = make_operator("inpainting", kind="box", box_size=6)
    y = op.measure(torch.rand(1, 3, 16, 16) * 2 - 1, [torch.Generator().manual_seed(0)])
    lq = degraded_input(cfg, op, y)
    assert not (lq[:, :3] == 0).all(dim=1).any()  # every hole filled, none left at zero
    with pytest.raises(ValueError, match="fill is for the inpainting head"):
        DiffIRConfig(head="sr", fill=True)
    torch.nn.init.zeros_(net.tail.weight)
    assert torch.equal(net(lq, torch.zeros(1, cfg.ipr)), lq[:, :3])


def test_builtin_choice_by_task_and_size(tmp_path, monkeypatch):
    from spgd.diffir import model as diffir_model

    monkeypatch.setattr(diffir_model, "BUILTIN_DIR", tmp_path / "builtin")
    (tmp_path / "builtin").mkdir()
    export(_weights(tmp_path).parent / "super_resolution-s2", tmp_path / "builtin" / "faces64_sr4.safetensors",
           image_size=64)
    export(tmp_path / "super_resolution-s2", tmp_path / "builtin" / "natural_sr4.safetensors")
    assert choose_builtin("super_resolution", (64, 64))[0] == "builtin:diffir-faces64_sr4"
    assert choose_builtin("super_resolution", (200, 136))[0] == "builtin:diffir-natural_sr4"
    assert choose_builtin("super_resolution", None, resize=True)[0] == "builtin:diffir-faces64_sr4"
    with pytest.raises(ValueError, match="no built-in DiffIR weights for task gaussian_blur"):
        choose_builtin("gaussian_blur", (64, 64))
    model = builtin_model("diffir", "super_resolution", spgd.make_operator("super_resolution", scale=4), (120, 80))
    assert isinstance(model, DiffIRModel) and "any size" in model.description
    # the API without a model: the built-in weights for the operator and the size
    op = make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = torch.rand(1, 3, 16, 16) * 2 - 1
    faces = load_diffir("builtin:diffir-faces64_sr4")
    expected = (faces.restore_measurement(op, y, seed=[7]) + 1) / 2
    assert torch.allclose(spgd.restore(y, op, sampler="diffir", seed=7), expected)
    with pytest.raises(ValueError, match="no built-in DiffIR weights for task inpainting"):
        spgd.restore(y, make_operator("inpainting", kind="random"), sampler="diffir")


def test_cli_restore_with_a_diffir_file(tmp_path, capsys):
    path = _weights(tmp_path, image_size=32)
    image = torch.rand(3, 40, 24)
    save_image(image, tmp_path / "photo.png")
    out = tmp_path / "restored"
    assert main(["restore", "-t", "super_resolution", "--sampler", "diffir", "--model", str(path), "--simulate",
                 "-i", str(tmp_path / "photo.png"), "--resize", "-o", str(out)]) == 0
    assert "DiffIR" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"]["photo.png"]["psnr"] > 5
    assert (out / "grid.png").is_file() and "sampler: diffir" in (out / "config.yaml").read_text()
    assert main(["restore", "-t", "inpainting_random", "--sampler", "diffir", "--model", str(path), "--simulate",
                 "-i", str(tmp_path / "photo.png"), "--resize", "-o", str(tmp_path / "wrong")]) == 2
    assert "cannot restore a inpainting measurement" in capsys.readouterr().err
    assert main(["restore", "-t", "super_resolution", "--sampler", "spgd", "--model", str(path), "--simulate",
                 "-i", str(tmp_path / "photo.png"), "--resize", "-o", str(tmp_path / "notaprior")]) == 2
    assert "is a diffir weight file, not a diffusion prior: use it with --sampler diffir" in capsys.readouterr().err


def test_constant_ipr_backbone_restores_without_ground_truth(tmp_path):
    cfg = _cfg(tmp_path, out="plain")
    cfg.model["constant_ipr"] = True
    train(cfg, progress=False)
    model = load_diffir(export(cfg.out, tmp_path / "plain.safetensors"))
    assert model.metadata["stage"] == 1 and "E.z" in model.network.state_dict()
    op = make_operator("super_resolution", scale=4)
    y = torch.rand(1, 3, 8, 8) * 2 - 1
    assert model.restore_measurement(op, y).shape == (1, 3, 32, 32)


def test_one_model_for_two_mask_kinds(tmp_path, monkeypatch):
    from spgd.diffir import model as diffir_model

    path = _weights(tmp_path, task="inpainting_random,inpainting_box", image_size=64)
    meta = load_diffir(path).metadata
    assert meta["tasks"] == ["inpainting_random", "inpainting_box"]
    assert [o["kind"] for o in meta["operators"]] == ["random", "box"]
    monkeypatch.setattr(diffir_model, "BUILTIN_DIR", path.parent)
    assert choose_builtin("inpainting_box", (64, 64))[0] == f"builtin:diffir-{path.stem}"
    with pytest.raises(ValueError, match="one operator kind"):
        build(_cfg(tmp_path, task="inpainting_random,super_resolution", out="mixed"))


def test_constant_ipr_run_can_start_from_a_stage1_dirformer(tmp_path):
    train(_cfg(tmp_path), progress=False)
    cfg = _cfg(tmp_path, out="plain", teacher=str(tmp_path / "s1"))
    cfg.model["constant_ipr"] = True
    network, teacher = build(cfg)
    state = torch.load(latest_checkpoint(tmp_path / "s1"), weights_only=False)["ema"]
    assert teacher is None
    assert all(torch.equal(v, state[f"G.{k}"]) for k, v in network.G.state_dict().items())


def test_cli_restores_any_size_with_weights_of_no_fixed_size(tmp_path):
    path = _weights(tmp_path)  # no image_size: natural-image weights
    save_image(torch.rand(3, 40, 24), tmp_path / "photo.png")
    out = tmp_path / "restored"
    assert main(["restore", "-t", "super_resolution", "--sampler", "diffir", "--model", str(path), "--simulate",
                 "-i", str(tmp_path / "photo.png"), "-o", str(out)]) == 0
    from PIL import Image

    assert Image.open(out / "photo.png").size == (24, 40)
    lr = tmp_path / "lr.png"
    save_image(torch.rand(3, 10, 6), lr)
    assert main(["restore", "-t", "super_resolution", "--sampler", "diffir", "--model", str(path), "-i", str(lr),
                 "-o", str(tmp_path / "measured")]) == 0
    assert Image.open(tmp_path / "measured" / "lr.png").size == (24, 40)


def test_bench_scores_diffir_at_each_image_size_on_the_y_channel(tmp_path):
    path = _weights(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    save_image(torch.rand(3, 40, 24), data / "a.png")
    save_image(torch.rand(3, 32, 48), data / "b.png")
    out = tmp_path / "bench"
    assert main(["bench", "-t", "super_resolution", "--sampler", "diffir", "--model", str(path), "--data", str(data),
                 "--out", str(out), "--batch-size", "2", "--metric-space", "y", "--crop-border", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metric_space"] == "y" and metrics["counts"]["restored"] == 2
    from PIL import Image

    sizes = {p.name: Image.open(p).size for p in out.rglob("*.png") if p.parent.name == "restored"}
    assert sizes == {"a.png": (24, 40), "b.png": (48, 32)}
    assert all("psnr_y" in record for record in metrics["images"].values())


def test_self_ensemble_commutes_with_the_flips_and_rotations(tmp_path):
    """The 8-transform self-ensemble is the mean over a group, so flipping or transposing the measurement
    flips or transposes the result (to rounding), which one pass of a trained network does not do."""
    from spgd.diffir.model import dihedral

    model = load_diffir(_weights(tmp_path, task="denoising"))
    op = make_operator("denoising", sigma=25)
    y = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # a multiple of the stride
    ensemble = model.configured({"self_ensemble": True})
    x = ensemble.restore(op, y, [3], progress=False)
    for k in (1, 2, 4, 7):
        assert torch.allclose(ensemble.restore(op, dihedral(y, k), [3], progress=False), dihedral(x, k), atol=1e-5)
        assert torch.equal(dihedral(dihedral(y, k), k, inverse=True), y)
    one = model.restore(op, y, [3], progress=False)
    assert not torch.allclose(model.restore(op, y.flip(-1), [3], progress=False), one.flip(-1), atol=1e-3)
    assert model.describe()["sampler_settings"]["self_ensemble"] is False
