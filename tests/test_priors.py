"""ADM network presets against the public checkpoints' key lists; the VP denoiser against golden values."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from spgd.priors import CheckpointError, build_network, load_prior
from spgd.schedule import BETA_D, BETA_MIN
from spgd.schedule import vp_sigma_to_t as sigma_to_t

from .conftest import REFERENCE, need


@pytest.mark.shared
@pytest.mark.parametrize("preset", ["ffhq256", "imagenet256"])
def test_preset_state_dict_matches_public_checkpoint_keys(preset):
    rows = need(REFERENCE / f"adm_keys_{preset}.tsv").read_text().strip().splitlines()
    expected = [tuple(r.split("\t")) for r in rows]
    got = [(k, str(tuple(v.shape))) for k, v in build_network(preset, "meta").state_dict().items()]
    assert got == expected


def test_denoiser_matches_golden(golden, tiny_prior):
    for sigma, case in golden["denoiser"].items():
        with torch.no_grad():
            d = tiny_prior.denoise(case["x"], case["sigma"])
        assert (d - case["D"]).abs().max() < 1e-4, sigma


def test_denoiser_per_image_sigma_equals_separate_calls(golden, tiny_prior):
    cases = list(golden["denoiser"].values())
    x = torch.cat([c["x"] for c in cases])
    sigmas = torch.tensor([c["sigma"] for c in cases])
    with torch.no_grad():
        d = tiny_prior.denoise(x, sigmas)
    for i, c in enumerate(cases):
        assert (d[i] - c["D"][0]).abs().max() < 1e-4


def test_denoiser_parameters_never_require_grad(tiny_prior):
    assert not any(p.requires_grad for p in tiny_prior.parameters())
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    tiny_prior.denoise(x, 1.0).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in tiny_prior.parameters())


def test_sigma_to_time_inverts_the_linear_vp_marginal():
    """The VP SDE with beta(t) = beta_min + beta_d t has sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1."""
    t = torch.linspace(0.01, 1, 50, dtype=torch.float64)
    sigma = (torch.exp(0.5 * BETA_D * t ** 2 + BETA_MIN * t) - 1).sqrt()
    assert torch.allclose(sigma_to_t(sigma), t, atol=1e-10)


def test_safetensors_roundtrip_with_stored_config(tiny_prior_path, tmp_path, golden):
    import json

    ckpt = torch.load(tiny_prior_path, weights_only=True)
    path = tmp_path / "tiny.safetensors"
    save_file(ckpt["state_dict"], str(path), metadata={"config": json.dumps(ckpt["config"])})
    prior = load_prior(path)
    case = next(c for c in golden["denoiser"].values() if c["sigma"] == 0.5)
    with torch.no_grad():
        assert (prior.denoise(case["x"], 0.5) - case["D"]).abs().max() < 1e-4


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothing.pt"):
        load_prior(tmp_path / "nothing.pt")


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="state dict"):
        load_prior(path, "ffhq256")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable torch checkpoint"):
        load_prior(tmp_path / "junk.pt")


def test_key_and_shape_mismatches_are_listed(tiny_prior_path, tmp_path):
    ckpt = torch.load(tiny_prior_path, weights_only=True)
    state = dict(ckpt["state_dict"])
    state["extra.weight"] = torch.zeros(1)
    del state["out.2.bias"]
    state["time_embed.0.bias"] = torch.zeros(7)
    torch.save({"config": ckpt["config"], "state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_prior(tmp_path / "bad.pt")
    message = str(err.value)
    assert "\n" not in message  # one line
    assert "1 missing keys: out.2.bias" in message
    assert "1 unexpected keys: extra.weight" in message
    assert "time_embed.0.bias: file (7,) vs network (128,)" in message


def test_wrong_preset_for_file_is_named(tmp_path):
    state = build_network("ffhq256").state_dict()
    torch.save(state, tmp_path / "ffhq_like.pt")
    with pytest.raises(CheckpointError, match="matches the 'ffhq256' architecture: use --arch ffhq256"):
        load_prior(tmp_path / "ffhq_like.pt", "imagenet256")
    # with no config the matching preset is found from the keys and shapes
    assert load_prior(tmp_path / "ffhq_like.pt").image_size == 256


def test_unknown_preset_and_builtin():
    with pytest.raises(ValueError, match="unknown architecture 'ffhq1024'"):
        build_network("ffhq1024")
    with pytest.raises(CheckpointError, match="no such built-in prior"):
        load_prior("builtin:nope")


def test_builtin_priors_are_the_weight_files_in_the_package_folder(tmp_path, monkeypatch):
    import json

    from spgd.priors import builtin_priors, loaders

    config = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="",
                  num_head_channels=32, learn_sigma=False)
    network = build_network(config)
    save_file({k: v.half().contiguous() for k, v in network.state_dict().items()}, str(tmp_path / "faces16.safetensors"),
              metadata={"config": json.dumps(config)})
    monkeypatch.setattr(loaders, "BUILTIN_DIR", tmp_path)
    assert builtin_priors() == {"builtin:faces16": tmp_path / "faces16.safetensors"}
    assert load_prior("builtin:faces16").image_size == 16
    with pytest.raises(CheckpointError, match=r"available: builtin:faces16\)"):
        load_prior("builtin:faces64")


def test_reduced_precision_weights_denoise_close_to_fp32(tiny_prior_path, golden):
    case = next(c for c in golden["denoiser"].values() if c["sigma"] == 3.0)
    prior = load_prior(tiny_prior_path, dtype=torch.bfloat16)
    with torch.no_grad():
        d = prior.denoise(case["x"], case["sigma"])
    assert d.dtype == torch.float32
    assert (d - case["D"]).abs().max() < 0.1  # bf16 weights and activations: about 2-3 significant digits


def _ship_tiny_priors(folder, names, size=16):
    """Tiny random ADM weight files as the package's built-in priors `names` (no ../shared needed)."""
    import json

    config = dict(image_size=size, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="",
                  num_head_channels=32, learn_sigma=False)
    for k, name in enumerate(names):
        torch.manual_seed(k)
        network = build_network(config)
        save_file({key: v.half().contiguous() for key, v in network.state_dict().items()},
                  str(folder / f"{name}.safetensors"), metadata={"config": json.dumps(config), "objective": "edm"})


def test_the_builtin_prior_is_chosen_by_the_image(tmp_path, monkeypatch):
    from spgd.priors import loaders
    from spgd.priors.loaders import choose_builtin_prior

    monkeypatch.setattr(loaders, "BUILTIN_DIR", tmp_path)
    _ship_tiny_priors(tmp_path, ["faces64"])
    name, why = choose_builtin_prior((136, 200))
    assert name == "builtin:faces64" and "the only built-in prior" in why and "200x136" in why
    _ship_tiny_priors(tmp_path, ["natural"])
    assert choose_builtin_prior((64, 64))[0] == "builtin:faces64"
    assert choose_builtin_prior((136, 200), resize=True)[0] == "builtin:faces64"
    assert choose_builtin_prior(None)[0] == "builtin:faces64"
    name, why = choose_builtin_prior((136, 200))
    assert name == "builtin:natural" and why == "chosen for a 200x136 image, not a 64x64 face"


def test_restore_without_a_model_loads_the_prior_chosen_for_the_image(tmp_path, monkeypatch):
    import spgd
    from spgd.methods import builtin_model
    from spgd.priors import loaders

    monkeypatch.setattr(loaders, "BUILTIN_DIR", tmp_path)
    _ship_tiny_priors(tmp_path, ["faces64", "natural"])
    natural = builtin_model("ddnm", "super_resolution", spgd.make_operator("super_resolution", scale=4), (40, 48))
    assert natural.name == "builtin:natural" and natural.description.endswith("chosen for a 48x40 image, not a 64x64 face")
    faces = builtin_model("ddnm", "super_resolution", spgd.make_operator("super_resolution", scale=4), (64, 64))
    assert faces.name == "builtin:faces64"
    x = torch.rand(1, 3, 40, 48)
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = spgd.simulate(x, op, seed=0)
    chosen = spgd.restore(y, op, sampler="ddnm", seed=0, steps=10, progress=False)
    named = spgd.restore(y, op, load_prior("builtin:natural"), sampler="ddnm", seed=0, steps=10, progress=False)
    assert chosen.shape == (1, 3, 40, 48) and torch.equal(chosen, named)
