"""JPEG as a forward model: the encoder is libjpeg's bit for bit (the coefficients Pillow writes, read back with
`jpeglib`), simulated files decode as Pillow decodes them, a measured .jpg brings its own tables, and the
float twin the samplers differentiate stays within the quantisation cells it is projected into."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import spgd
from spgd.cli import main
from spgd.operators.jpeg import read_jpeg_coding
from spgd.operators.jpeg_codec import encode, ijg_tables

pytestmark = pytest.mark.usefixtures("one_thread")
PIL_SUBSAMPLING = {"4:2:0": 2, "4:4:4": 0}
GAIN_Q15, GAIN_Q40 = 0.6, 0.5  # dB over the decode the shipped JPEG restorer must reach (measured +0.83, +0.71)


def crop(height: int, width: int) -> np.ndarray:
    return data.astronaut()[40:40 + height, 120:120 + width].copy()


def as_x(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.mark.parametrize("quality", [10, 30, 75, 95])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("size", [(64, 64), (37, 53)])  # whole blocks, and partial ones on both edges
def test_the_encoder_writes_the_coefficients_pillow_writes(quality, subsampling, size, tmp_path):
    jpeglib = pytest.importorskip("jpeglib", reason="reads a JPEG file's coefficients: pip install jpeglib")
    rgb = crop(*size)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling])
    stored = jpeglib.read_dct(str(tmp_path / "a.jpg"))
    luma, chroma = ijg_tables(quality)
    assert np.array_equal(luma, stored.qt[0]) and np.array_equal(chroma, stored.qt[1])
    ours = encode(rgb, luma, chroma, subsampling)
    assert all(np.array_equal(a, b) for a, b in zip(ours, [stored.Y, stored.Cb, stored.Cr]))


def test_tables_and_sampling_are_read_from_the_file(tmp_path):
    rgb = crop(48, 40)
    for quality, subsampling in ((15, "4:2:0"), (60, "4:4:4")):
        Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling])
        coding = read_jpeg_coding(tmp_path / "a.jpg")
        assert coding == {"tables": [t.reshape(-1).tolist() for t in ijg_tables(quality)], "subsampling": subsampling}
        op = spgd.make_operator("jpeg")
        assert op.fit_to_measurement(torch.zeros(1, 3, 48, 40), [tmp_path / "a.jpg"]) == {
            "quality": quality, "subsampling": subsampling, "tables": "read from the file"}
    Image.fromarray(rgb.mean(2).astype(np.uint8)).save(tmp_path / "g.jpg", quality=20)
    assert read_jpeg_coding(tmp_path / "g.jpg")["subsampling"] == "gray"
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a.png: not a JPEG file \(PNG\).*--op quality=Q"):
        spgd.make_operator("jpeg").fit_to_measurement(torch.zeros(1, 3, 48, 40), [tmp_path / "a.png"])
    with pytest.raises(ValueError, match="give the quality to simulate"):
        spgd.make_operator("jpeg").measure(as_x(rgb))
    clean_file = spgd.make_operator("jpeg", quality=30).measure(as_x(rgb))
    noisy_file = spgd.make_operator("jpeg", quality=30, noise_sigma=0.1).measure(as_x(rgb), torch.Generator().manual_seed(0))
    assert float((noisy_file - clean_file).std()) == pytest.approx(0.1, rel=0.1)  # noise on the file, coded once


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_a_simulated_file_decodes_as_pillow_decodes_it(subsampling, tmp_path):
    """Same coefficients; the decodes differ only by the float against the integer inverse DCT and rounding
    (measured on four crops at quality 10, 30, 75: at most 3 of 255, mean 0.002-0.48)."""
    rgb = crop(100, 90)
    for quality in (10, 30, 75):
        Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling])
        pillow = torch.from_numpy(np.array(Image.open(tmp_path / "a.jpg").convert("RGB"))).permute(2, 0, 1).float()
        ours = (spgd.make_operator("jpeg", quality=quality, subsampling=subsampling).measure(as_x(rgb))[0] + 1) * 127.5
        difference = (ours - pillow).abs()
        assert difference.max() <= 3 + 1e-3 and difference.mean() < 0.5


def test_the_float_twin_is_differentiable_and_its_rounding_surrogates_stay_close():
    x = as_x(crop(32, 48)).double()
    exact = spgd.make_operator("jpeg", quality=30).double()
    cubic = spgd.make_operator("jpeg", quality=30, rounding="cubic").double()
    x_in = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(exact.A(x_in).pow(2).sum(), x_in)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0  # straight-through: the codec's own gradient
    rounded = exact.decode([torch.round(c) for c in exact.coefficients(x)], x.shape)
    assert torch.equal(exact.A(x), rounded)  # its value is the exact rounding
    steps = [(torch.round(c) + (c - torch.round(c)) ** 3) - torch.round(c) for c in cubic.coefficients(x)]
    assert max(float(s.abs().max()) for s in steps) <= 0.125  # cubic: within 1/8 of a step of the rounding


@pytest.mark.parametrize("subsampling, cells", [("4:4:4", 0.5 + 1e-6), ("4:2:0", 0.52)])
def test_a_result_is_put_back_into_the_files_quantisation_cells(subsampling, cells):
    op = spgd.make_operator("jpeg", quality=30, subsampling=subsampling).double()
    y = op.measure(as_x(crop(96, 96))).double()
    guess = torch.rand(1, 3, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kept = op.with_measured(guess, y)
    distance = max(float((c - torch.round(t)).abs().max()) for c, t in zip(op.coefficients(kept), op.coefficients(y)))
    assert distance <= cells  # measured: 0.5 (4:4:4, one projection) and 0.502 (4:2:0, ten)


def test_a_jpeg_file_restores_with_nothing_but_the_file(tmp_path, tiny_prior_path):
    Image.fromarray(crop(64, 64)).save(tmp_path / "photo.jpg", quality=15)
    assert main(["restore", "-t", "jpeg", "-i", str(tmp_path / "photo.jpg"), "-o", str(tmp_path / "out"), "-m",
                 str(tiny_prior_path), "--sampler", "ddnm", "--steps", "4", "--threads", "1"]) == 0
    entry = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]["photo.jpg"]
    assert entry["estimated"] == {"quality": 15, "subsampling": "4:2:0", "tables": "read from the file"}
    restored = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    assert restored.shape == (64, 64, 3)  # the file's size comes back


def test_super_resolution_of_a_jpeg_is_the_chain_of_the_two_operators(tmp_path, tiny_prior_path):
    """`super_resolution_jpeg` simulates exactly the JPEG file of the downscaled image, differentiates the chain of
    the two float operators, inverts with the resize's pseudo-inverse of the decode, and reads a measured low-res
    .jpg's tables: a 16x16 file restores at 64x64 with nothing else said."""
    x = as_x(crop(64, 64))
    chain = spgd.make_operator("super_resolution_jpeg", scale=4, quality=30)
    resize, jpeg = spgd.make_operator("super_resolution", scale=4), spgd.make_operator("jpeg", quality=30)
    y = chain.measure(x)
    assert torch.equal(y, jpeg.measure(resize.A(x))) and y.shape == (1, 3, 16, 16)
    assert chain.input_shape(y) == (1, 3, 64, 64) and torch.equal(chain.A_pinv(y), resize.A_pinv(y))
    assert not chain.supports("svd")
    x.requires_grad_(True)
    chain.A(x).square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0
    Image.fromarray(np.asarray(Image.fromarray(crop(64, 64)).resize((16, 16), Image.BICUBIC))).save(
        tmp_path / "small.jpg", quality=35)
    assert main(["restore", "-t", "super_resolution_jpeg", "-i", str(tmp_path / "small.jpg"), "-o",
                 str(tmp_path / "out"), "-m", str(tiny_prior_path), "--sampler", "ddnm", "--steps", "10",
                 "--threads", "1"]) == 0
    entry = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]["small.jpg"]
    assert entry["estimated"]["quality"] == 35 and (entry["width"], entry["height"]) == (64, 64)
    assert np.asarray(Image.open(tmp_path / "out" / "small.png")).shape == (64, 64, 3)


def test_the_shipped_blind_jpeg_restorer_restores_a_jpeg_with_nothing_else_given(tmp_path):
    """`-t jpeg` with no model or sampler: the built-in DiffIR JPEG restorer (trained on qualities 10-60 drawn per
    crop), never told the quality, beats the decode; a file coded outside that range is said."""
    from spgd.metrics import psnr

    rgb = data.astronaut()[0:96, 160:256].copy()
    clean = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
    for quality, low in ((15, GAIN_Q15), (40, GAIN_Q40)):
        path = tmp_path / f"q{quality}.jpg"
        Image.fromarray(rgb).save(path, quality=quality)
        assert main(["restore", "-t", "jpeg", "-i", str(path), "-o", str(tmp_path / f"out{quality}"),
                     "--threads", "1"]) == 0
        restored = spgd.io.load_image(tmp_path / f"out{quality}" / f"q{quality}.png")[None].double()
        decoded = spgd.io.load_image(path)[None].double()
        gain = float(psnr(restored, clean) - psnr(decoded, clean))
        assert gain > low, (quality, gain)
    config = json.loads((tmp_path / "out15" / "metrics.json").read_text())["images"]["q15.jpg"]
    assert config["model"] == "builtin:diffir-natural_jpeg" and config["estimated"]["quality"] == 15
    Image.fromarray(rgb).save(tmp_path / "q5.jpg", quality=5)
    with pytest.warns(UserWarning, match="quality 5 is outside the 10-60 these weights were trained on"):
        assert main(["restore", "-t", "jpeg", "-i", str(tmp_path / "q5.jpg"), "-o", str(tmp_path / "out5"),
                     "--threads", "1"]) == 0
