"""What the user gave comes back: image modes (gray, 16-bit, palette, transparency, EXIF orientation) and the
size cap, read by `spgd.io` and carried through `spgd restore` with the built-in prior (no ../shared needed).

The oversized images are PNG headers claiming the size (`spgd.io.raw_png`): no test
writes or decodes 15000x15000 pixels.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spgd import io
from spgd.cli import main
from spgd.metrics import psnr
from spgd.operators import make_operator
from spgd.run import make_spec, read_clean, load_measured


FAST = ["--steps", "2", "--inner-steps", "1", "--mean-of", "1"]


def gray_face(size: int = 64, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 1, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic")[0, 0].clamp(0, 1).numpy()


def rgba_face(transparent_corner: int = 8) -> np.ndarray:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:transparent_corner, :transparent_corner] = 0
    alpha[40, 40] = 130  # translucent, but known: at or above the threshold of 128
    return np.dstack([rgb, alpha])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- reading: one rule per mode ------------------------------------------------------------------

def test_gray_8_and_16_bit_are_read_as_replicated_gray_and_written_back_in_their_mode(tmp_path):
    values = gray_face()
    Image.fromarray((values * 255).round().astype(np.uint8)).save(tmp_path / "g8.png")
    Image.fromarray((values * 65535).round().astype(np.uint16)).save(tmp_path / "g16.png")
    for name, top, mode in (("g8.png", 255, "L"), ("g16.png", 65535, "I;16")):
        image = io.read_image(tmp_path / name)
        assert image.gray and image.bits == (16 if top == 65535 else 8) and image.alpha is None
        stored = np.asarray(Image.open(tmp_path / name), dtype=np.float64) / top
        assert all(torch.equal(image.pixels[c], image.pixels[0]) for c in range(3))
        assert np.allclose(image.pixels[0].numpy(), stored, atol=1e-6)  # 16-bit: not clipped to 255 as Pillow's RGB
        io.save_image(image.pixels, tmp_path / f"out_{name}", like=image)
        out = Image.open(tmp_path / f"out_{name}")
        assert out.mode == mode and np.array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / name)))


def test_a_gray_result_is_the_mean_of_the_restored_channels(tmp_path):
    image = io.InputImage(torch.zeros(3, 2, 2), gray=True)
    x = torch.tensor([0.2, 0.5, 0.8])[:, None, None].expand(3, 2, 2)
    assert torch.allclose(image.as_written(x), torch.full((3, 2, 2), 0.5))
    io.save_image(x, tmp_path / "mean.png", like=image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mean.png")), np.full((2, 2), 128, np.uint8))


def test_palette_exif_and_16_bit_colour_follow_their_rules(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (6, 4, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(8)
    palette.save(tmp_path / "p.png")
    image = io.read_image(tmp_path / "p.png")
    assert not image.gray and image.alpha is None  # palette -> RGB
    assert np.array_equal(io.to_uint8(image.pixels), np.asarray(palette.convert("RGB")))
    palette.save(tmp_path / "p_trns.png", transparency=0)
    assert io.read_image(tmp_path / "p_trns.png").transparent() is not None  # a transparent palette entry
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "rotated.png", exif=exif)
    upright = io.read_image(tmp_path / "rotated.png")
    assert upright.pixels.shape == (3, 4, 6)
    assert np.array_equal(io.to_uint8(upright.pixels), np.rot90(rgb, k=-1))
    rows = np.full((2, 2, 3), 0x12F0, dtype=">u2")  # 16-bit RGB: Pillow reads it at 8 bits (the high byte)
    scanlines = b"".join(b"\x00" + row.tobytes() for row in rows)
    io.raw_png(tmp_path / "rgb16.png", 2, 2, scanlines, bit_depth=16)
    image = io.read_image(tmp_path / "rgb16.png")
    assert not image.gray and image.bits == 8 and torch.allclose(image.pixels, torch.full((3, 2, 2), 0x12 / 255))


def test_transparency_is_kept_and_only_alpha_below_128_is_unknown(tmp_path):
    Image.fromarray(rgba_face(), "RGBA").save(tmp_path / "rgba.png")
    image = io.read_image(tmp_path / "rgba.png")
    assert image.alpha is not None and image.alpha.shape == (1, 64, 64)
    transparent = image.transparent()
    assert int(transparent.sum()) == 64 and bool(transparent[0, :8, :8].all()) and not transparent[0, 40, 40]
    io.save_image(image.pixels, tmp_path / "out.png", like=image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), rgba_face())
    io.save_image(torch.zeros(3, 128, 128), tmp_path / "larger.png", like=image)  # a 2x SR result: alpha resized
    alpha = np.asarray(Image.open(tmp_path / "larger.png"))[..., 3]
    assert alpha.shape == (128, 128) and alpha[0, 0] == 0 and alpha[100, 100] == 255


# --- transparent pixels are unknown to an operator that can leave pixels out --------------------

def test_only_inpainting_can_leave_pixels_out():
    assert make_operator("inpainting", kind="box").takes_unknown_pixels
    assert not make_operator("super_resolution", scale=4).takes_unknown_pixels


def test_transparent_pixels_join_a_given_mask_and_a_drawn_one_with_the_same_draw():
    unknown = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    unknown[..., 0, :] = True
    given = torch.ones(1, 1, 8, 8)
    given[..., :, 0] = 0
    op = make_operator("inpainting", mask=given.clone())
    op.mark_unknown(unknown)
    assert torch.equal(op.mask, given * ~unknown)
    x = torch.zeros(1, 3, 8, 8)
    plain, marked = (make_operator("inpainting", kind="random", fraction=0.5) for _ in range(2))
    marked.mark_unknown(unknown)
    plain.draw(x, [torch.Generator().manual_seed(3)])
    marked.draw(x, [torch.Generator().manual_seed(3)])
    assert torch.equal(marked.mask, plain.mask * ~unknown)
    alone = make_operator("inpainting", kind="box")
    alone.mark_unknown(unknown)
    assert alone.unset_parameters() == [] and torch.equal(alone.mask, (~unknown).float())


def test_a_measured_transparent_image_is_its_own_mask_and_joins_a_user_mask(tmp_path):
    from spgd.priors import load_prior

    prior = load_prior("builtin:faces64")
    Image.fromarray(rgba_face(), "RGBA").save(tmp_path / "rgba.png")
    spec = make_spec(prior, "inpainting_random")
    operator = spec.make_operator()
    y, images = load_measured(spec, operator, [tmp_path / "rgba.png"], resize=False)
    known = ~images[0].transparent()
    assert torch.equal(operator.mask[0].bool(), known)
    assert torch.equal(y[0][:, ~known[0]], torch.zeros(3, 64))
    mask = np.full((64, 64), 255, np.uint8)
    mask[32:, 32:] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    spec = make_spec(prior, "inpainting_random", mask=tmp_path / "mask.png")
    operator = spec.make_operator()
    load_measured(spec, operator, [tmp_path / "rgba.png"], resize=False)
    assert torch.equal(operator.mask[0, 0].bool(), known[0] & torch.from_numpy(mask > 0))
    simulated = spec.make_operator()  # simulating from the same clean file: the same combined mask
    clean, _ = read_clean(spec, simulated, [tmp_path / "rgba.png"], resize=False)
    assert clean.shape == (1, 3, 64, 64) and torch.equal(simulated.mask, operator.mask)


# --- end to end: spgd restore with the built-in prior ---------------------------------------------

def test_restore_writes_gray_for_gray_and_scores_what_it_wrote(tmp_path, capsys):
    Image.fromarray((gray_face() * 65535).round().astype(np.uint16)).save(tmp_path / "face16.png")
    Image.fromarray((gray_face(seed=1) * 255).round().astype(np.uint8)).save(tmp_path / "face8.png")
    out = tmp_path / "out"
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(tmp_path / "face16.png"),
                 str(tmp_path / "face8.png"), "-o", str(out), "--batch-size", "2", *FAST]) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())["images"]
    for name, mode, top in (("face16", "I;16", 65535), ("face8", "L", 255)):
        assert Image.open(out / f"{name}.png").mode == mode and Image.open(out / f"{name}_measurement.png").mode == mode
        written = torch.from_numpy(np.asarray(Image.open(out / f"{name}.png"), dtype=np.float32) / top)
        clean = io.load_image(tmp_path / f"{name}.png")
        score = float(psnr(written.expand(3, -1, -1)[None], clean[None])[0])
        assert abs(score - metrics[f"{name}.png"]["psnr"]) < 0.05


def test_restore_keeps_transparency_and_refuses_it_where_pixels_cannot_be_left_out(tmp_path, capsys):
    Image.fromarray(rgba_face(), "RGBA").save(tmp_path / "logo.png")
    out = tmp_path / "out"
    assert main(["restore", "-t", "inpainting_box", "-i", str(tmp_path / "logo.png"), "-o", str(out), *FAST]) == 0
    written = np.asarray(Image.open(out / "logo.png"))
    assert written.shape == (64, 64, 4) and np.array_equal(written[..., 3], rgba_face()[..., 3])
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(tmp_path / "logo.png"),
                 "-o", str(tmp_path / "sr"), *FAST]) == 2
    assert one_error_line(capsys).endswith("logo.png: 64 transparent pixel(s) (alpha below 128 of 255), which the "
                                           "super_resolution operator cannot leave out as unknown; remove the "
                                           "transparency (flatten the image) or use an inpainting task")


# --- the size cap -----------------------------------------------------------------------------------

def test_oversized_images_are_refused_from_their_header_in_one_line(tmp_path, capsys, monkeypatch):
    huge = io.raw_png(tmp_path / "huge.png", 15000, 15000)  # over Pillow's own bomb limit
    large = io.raw_png(tmp_path / "large.png", 8000, 6000)  # over 40 MP, under Pillow's limit
    with pytest.raises(io.ImageError, match=r"huge.png: image has 225 megapixels: spgd reads images of up to 40 "):
        io.read_image(huge)
    with pytest.raises(io.ImageError, match=r"large.png: image is 8000x6000 \(WxH\), 48 megapixels: spgd reads "):
        io.read_image(large)
    assert main(["restore", "-t", "hdr", "--simulate", "-i", str(huge), "-o", str(tmp_path / "o"), *FAST]) == 2
    assert "huge.png: image has 225 megapixels" in one_error_line(capsys)
    monkeypatch.setattr(io, "MAX_IMAGE_PIXELS", 63 * 64)  # the same cap, lowered, for a real 64x64 image
    Image.fromarray(rgba_face(), "RGBA").save(tmp_path / "face.png")
    with pytest.raises(io.ImageError, match=r"face.png: image is 64x64 \(WxH\), 0 megapixels: spgd reads images "
                                            r"of up to 0.004032 megapixels"):
        io.read_image(tmp_path / "face.png")


def test_the_page_and_the_command_line_share_the_cap(tmp_path):
    from spgd import web

    large = io.raw_png(tmp_path / "large.png", 8000, 6000)
    with pytest.raises(web.PageError, match=r"^large.png: image is 8000x6000 \(WxH\), 48 megapixels"):
        web.check_upload(large)
