"""A person's own restoration network (`spgd.networks`, `--sampler network`): files of two architectures with
random weights (ESRGAN/RRDBNet as .pth, SwinIR as .safetensors) load through spandrel with nothing said about
their architecture, restore a low-res file at their scale exactly as the bare network computes it, are the
method a task runs when given as `--model`, and a scale that does not fit the task is one line. spandrel needs
torchvision, which does not import beside the pinned torch 2.13.0: CI runs these in its torch 2.14.1 venv, and
the main environment checks only the one-line refusal."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from spgd import io
from spgd.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_SPANDREL = importlib.util.find_spec("spandrel") is not None and importlib.util.find_spec("torchvision") is not None
needs_spandrel = pytest.mark.skipif(not HAS_SPANDREL, reason="spandrel is not installed (the networks extra; CI "
                                                            "runs these in its torch 2.14.1 + torchvision venv)")


@pytest.fixture
def network_files(tmp_path):
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    esrgan = tmp_path / "esrgan_x4.pth"
    torch.save(ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4).state_dict(), esrgan)
    swinir = tmp_path / "swinir_x2.safetensors"
    net = SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
                 upscale=2, upsampler="pixelshuffle")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(swinir))
    return {"esrgan": esrgan, "swinir": swinir}


def low_res(path, size=(20, 24), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@needs_spandrel
@pytest.mark.parametrize("kind, scale", [("esrgan", 4), ("swinir", 2)])
def test_a_network_file_restores_at_its_scale_as_the_bare_network_does(network_files, tmp_path, kind, scale):
    from spgd.methods import default_method, load_file
    from spgd.networks import NetworkRestorer

    model = network_files[kind]
    assert default_method(["diffir", "spgd"], model) == "network"  # the file says which method it is for
    restorer = load_file(model)
    assert isinstance(restorer, NetworkRestorer) and restorer.scale == scale
    low = low_res(tmp_path / "low.png")
    task = "super_resolution" if scale == 4 else _task_x2(tmp_path)
    assert main(["restore", "-t", task, "-i", str(low), "--model", str(model), "-o", str(tmp_path / "out")]) == 0
    restored = io.load_image(tmp_path / "out" / "low.png")
    assert restored.shape == (3, 20 * scale, 24 * scale)
    with torch.no_grad():
        bare = restorer.descriptor(io.load_image(low)[None]).clamp(0, 1)[0]
    assert torch.equal(restored, torch.from_numpy(io.to_uint8(bare)).permute(2, 0, 1).float() / 255)


def _task_x2(tmp_path) -> str:
    preset = tmp_path / "sr2.yaml"
    preset.write_text("description: 2x SR\noperator: {name: super_resolution, scale: 2, noise_sigma: 0.01}\n")
    return str(preset)


@needs_spandrel
def test_a_network_of_another_scale_is_one_line(network_files, tmp_path, capsys):
    low = low_res(tmp_path / "low.png")
    assert main(["restore", "-t", "super_resolution", "-i", str(low), "--model", str(network_files["swinir"]),
                 "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a 2x network makes 40x48 images from this 20x24 super_resolution measurement, not the 80x96" in err


@pytest.mark.skipif(HAS_SPANDREL, reason="spandrel is installed here")
def test_without_spandrel_a_network_is_refused_in_one_line(tmp_path, capsys):
    weights = tmp_path / "net.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, weights)
    low = low_res(tmp_path / "low.png")
    assert main(["restore", "-t", "super_resolution", "-i", str(low), "--sampler", "network", "--model", str(weights),
                 "-o", str(tmp_path / "out")]) == 2
    assert "spandrel, which is not installed here" in capsys.readouterr().err
