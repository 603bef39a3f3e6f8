"""PSNR/SSIM on the BT.601 luma with a cropped border (the super-resolution convention): closed-form
values, skimage cross-checks, and `spgd bench --metric-space y --crop-border N`."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from spgd import io
from spgd.cli import main
from spgd.metrics import psnr_y, rgb_to_y, ssim_y

from .conftest import write_face_like
from .test_bench import bench, run_ok

BT601 = np.array([65.481, 128.553, 24.966])


def test_luma_of_white_black_and_primaries():
    colours = torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(1, 5, 3).permute(2, 0, 1)
    y = rgb_to_y(colours[None])
    assert y.shape == (1, 1, 1, 5) and y.dtype == torch.float64
    assert y.flatten().tolist() == pytest.approx([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], abs=1e-12)


def test_luma_matches_skimage_rgb2ycbcr():
    from skimage.color import rgb2ycbcr

    x = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = rgb2ycbcr(x[0].permute(1, 2, 0).numpy())[..., 0]
    assert np.allclose(rgb_to_y(x)[0, 0].numpy(), expected, atol=1e-10)


def test_psnr_y_closed_form_and_crop():
    # 4x4 black against: the 12 border pixels pure green, one of the 4 inner pixels pure red
    x = torch.zeros(1, 3, 4, 4)
    ref = torch.zeros(1, 3, 4, 4)
    ref[0, 1] = 1.0
    ref[0, 1, 1:3, 1:3] = 0.0
    ref[0, 0, 1, 2] = 1.0
    green, red = 128.553, 65.481  # their luma differences from black
    whole = 10 * math.log10(255**2 / ((12 * green**2 + red**2) / 16))
    inner = 10 * math.log10(255**2 / (red**2 / 4))  # crop 1 keeps the 2x2 inside: the border is gone
    assert psnr_y(x, ref).item() == pytest.approx(whole, abs=1e-10)
    assert psnr_y(x, ref, crop_border=1).item() == pytest.approx(inner, abs=1e-10)
    ref[0, :, 1, 2] = 0.0  # now only the border differs: cropped away, the images are equal
    assert math.isinf(psnr_y(x, ref, crop_border=1).item())


def test_ssim_y_of_identical_images_is_one():
    x = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(ssim_y(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ssim_y(x, x, crop_border=4), torch.ones(2, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_y_matches_skimage_on_the_cropped_luma(crop):
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 40, 48, generator=g)
    ref = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)

    def luma(image: torch.Tensor) -> np.ndarray:  # computed here from the formula, then cropped
        y = 16 + image.permute(1, 2, 0).double().numpy() @ BT601
        return y[crop:y.shape[0] - crop, crop:y.shape[1] - crop]

    expected = [structural_similarity(luma(x[i]), luma(ref[i]), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255) for i in range(2)]
    assert np.allclose(ssim_y(x, ref, crop_border=crop).numpy(), expected, rtol=0, atol=1e-9)
    assert 0.3 < min(expected) < 0.99  # a pair that is neither equal nor unrelated


def test_bad_crops_and_images_are_refused():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="non-negative integer"):
        psnr_y(x, x, crop_border=-1)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr_y(x, x, crop_border=8)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(x, x, crop_border=3)
    with pytest.raises(ValueError, match="RGB"):
        psnr_y(x[:, :1], x[:, :1])


def _y_scores(path, clean_path, crop: int) -> tuple[float, float]:
    restored, clean = io.load_image(path)[None], io.load_image(clean_path)[None]
    return psnr_y(restored, clean, crop).item(), ssim_y(restored, clean, crop).item()


def test_bench_metric_space_y(tmp_path, tiny_prior_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    for k in range(2):
        write_face_like(data / f"{k}.png", seed=k)
    run_ok(bench(data, out, tiny_prior_path), capsys)
    result = json.loads((out / "metrics.json").read_text())
    assert (result["metric_space"], result["crop_border"]) == ("rgb", 0)
    assert set(result["summary"]) == {"psnr", "ssim"} and "psnr_y" not in result["images"]["0.png"]

    # resumed with the Y convention: nothing is restored again, the Y scores come from the saved files
    assert "0 restored now" in run_ok(bench(data, out, tiny_prior_path, "--metric-space", "y",
                                            "--crop-border", "4"), capsys)
    result = json.loads((out / "metrics.json").read_text())
    assert (result["metric_space"], result["crop_border"]) == ("y", 4)
    assert set(result["summary"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    for name, record in result["images"].items():
        assert record["crop_border"] == 4
        assert (record["psnr_y"], record["ssim_y"]) == pytest.approx(
            _y_scores(out / "restored" / name, data / name, 4), abs=1e-9)
        assert record["psnr_y"] != pytest.approx(record["psnr"], abs=1e-3)  # not the RGB number
    table = (out / "metrics.md").read_text()
    assert "PSNR-Y ↑" in table and "without 4 pixel(s) on each side" in table

    # a fresh run scores Y as it restores; the same numbers as from the files
    fresh = tmp_path / "fresh"
    run_ok(bench(data, fresh, tiny_prior_path, "--metric-space", "y", "--crop-border", "4"), capsys)
    assert json.loads((fresh / "metrics.json").read_text())["images"] == result["images"]


def test_bench_refuses_bad_metric_options_before_restoring(tmp_path, tiny_prior_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_face_like(data / "a.png")
    assert main(bench(data, tmp_path / "a", tiny_prior_path, "--crop-border", "4")) == 2
    assert "--crop-border applies to --metric-space y" in capsys.readouterr().err
    assert main(bench(data, tmp_path / "b", tiny_prior_path, "--metric-space", "y", "--crop-border", "27")) == 2
    assert "SSIM needs images of at least 11x11" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
