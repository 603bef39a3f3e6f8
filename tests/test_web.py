"""`spgd serve`'s handlers without a browser: a restore from the page is an `spgd restore` run (the same
files, byte for byte), progress and the live estimate, a cancel that stops the sampler, the command
line's messages for bad inputs, masks and kernels, and visitors who never see each other's runs."""
from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

pytest.importorskip("gradio", reason="the web page needs gradio: pip install 'spgd[web]'")

from spgd import web  # noqa: E402
from spgd.cli import build_parser, main  # noqa: E402
from spgd.web import MEASURED, PageError, RestoreRequest, WebApp  # noqa: E402

from .conftest import write_face_like

MODEL = "tiny"
FAST = "inner_steps=1 sigma_max=5"



@pytest.fixture
def app(tiny_prior, tmp_path, one_thread):
    return WebApp({MODEL: tiny_prior}, runs_dir=tmp_path / "served")


@pytest.fixture
def face(tmp_path) -> Path:
    return write_face_like(tmp_path / "face.png")


def request(image, task="super_resolution", **fields) -> RestoreRequest:
    return RestoreRequest(image=str(image), task=task, model=fields.pop("model", MODEL), steps=fields.pop("steps", 3),
                          extra=fields.pop("extra", FAST), **fields)


def finish(app: WebApp, req: RestoreRequest, session: str = "s", progress=None) -> tuple[dict, list[dict]]:
    """Run a restore to its end: (the merged updates, every update)."""
    updates = list(app.restore(req, session, progress))
    merged: dict = {}
    for update in updates:
        merged.update(update)
    return merged, updates


def run_folders(app: WebApp) -> list[Path]:
    runs = app.runs_dir / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


def test_a_restore_from_the_page_is_the_cli_run_byte_for_byte(app, face, tiny_prior_path, tmp_path):
    result, _ = finish(app, request(face, seed=1))
    [run] = run_folders(app)
    names = {"face.png", "face_measurement.png", "grid.png", "metrics.json", "config.yaml"}
    assert names <= {p.name for p in run.iterdir()}
    assert sorted(Path(f).name for f in result["files"]) == sorted(names)
    cli = tmp_path / "cli"
    assert main(["restore", "-i", str(face), "-t", "super_resolution", "-m", str(tiny_prior_path), "--simulate",
                 "--steps", "3", "--set", "inner_steps=1", "sigma_max=5", "--seed", "1",
                 "-o", str(cli)]) == 0  # the threads as the page chose them (no --threads: same choice, same line)
    for name in ("face.png", "face_measurement.png", "grid.png"):
        assert (run / name).read_bytes() == (cli / name).read_bytes(), name
    page_metrics, cli_metrics = (json.loads((d / "metrics.json").read_text()) for d in (run, cli))
    assert page_metrics["images"]["face.png"].pop("model") == MODEL  # the model's name as each named it
    cli_metrics["images"]["face.png"].pop("model")
    assert page_metrics == cli_metrics
    page_config, cli_config = ((d / "config.yaml").read_text().splitlines() for d in (run, cli))
    differing = [a for a, b in zip(page_config, cli_config) if a != b]
    assert len(page_config) == len(cli_config) and len(differing) == 2  # the model's name and the input's path
    assert result["restored"] == str(run / "face.png") and "PSNR" in result["metrics"]
    before, after = result["slider"]
    assert before.shape == after.shape == (64, 64, 3)
    assert result["status"].startswith("Done")


def test_progress_reports_every_step_and_the_live_estimate(app, face, monkeypatch):
    monkeypatch.setattr(web.jobs, "PREVIEW_S", 0.0)
    seen = []
    result, updates = finish(app, request(face, steps=4), progress=lambda value, desc: seen.append((value, desc)))
    steps = [value[0] for value, _ in seen]
    assert steps == sorted(steps) and steps[-1] == 4 and all(value[1] == 4 for value, _ in seen)
    assert all("data-fit loss" in desc for _, desc in seen)
    live = [u["live"] for u in updates if u.get("live") is not None]
    assert live and all(image.shape == (64, 64, 3) and image.dtype == np.uint8 for image in live)
    assert "<progress value='4' max='4'>" in result["progress"]


class CancellingPrior:
    """The tiny prior, whose `at`-th denoiser call presses the visitor's Cancel (from the restore's own thread,
    so the step the run stops at does not depend on timing)."""

    def __init__(self, prior, at: int) -> None:
        self.prior, self.at, self.calls, self.app = prior, at, 0, None

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def denoise(self, x, sigma):
        self.calls += 1
        if self.calls == self.at:
            self.app.cancel("visitor")
        return self.prior.denoise(x, sigma)


def test_cancel_stops_the_sampler_itself_and_keeps_nothing(tiny_prior, face, tmp_path, one_thread):
    prior = CancellingPrior(tiny_prior, at=3)  # SPGD with one inner step: one call per step
    app = prior.app = WebApp({MODEL: prior}, runs_dir=tmp_path / "served")
    result, _ = finish(app, request(face, steps=200), session="visitor")
    assert result["status"] == "Cancelled at step 2 of 200; nothing was kept."  # stopped at the next step
    assert prior.calls == 3  # not one network call after the cancel
    assert not any(t.name.startswith("spgd-restore-") and t.is_alive() for t in threading.enumerate())
    assert run_folders(app) == [] and app.running() == 0
    assert app.cancel("visitor") == "Cancelled."  # nothing running any more


def test_the_stop_callback_ends_a_sampler_loop_at_its_next_step(tiny_prior):
    import spgd
    from spgd.protocols import Stopped
    from spgd.restorers import PosteriorRestorer

    stop, steps = threading.Event(), []

    def report(step, loss, estimate):
        steps.append(step)
        if step == 2:
            stop.set()

    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = spgd.simulate(torch.rand(1, 3, 64, 64), op, seed=0)
    quick = {"spgd": {"inner_steps": 1}, "dps": {}, "daps": {"langevin_steps": 2, "ode_steps": 1}}
    for sampler, settings in quick.items():
        steps.clear()
        stop.clear()
        restorer = PosteriorRestorer(tiny_prior, sampler, {"steps": 50, **settings})
        with pytest.raises(Stopped):
            restorer.restore(op, y, [0], trace=web.ProgressTrace(report), progress=False, stop=stop.is_set)
        assert steps == [1, 2], sampler


def test_bad_inputs_give_the_command_lines_messages_and_leave_no_run(app, face, tmp_path, monkeypatch):
    def error(req) -> str:
        with pytest.raises(PageError) as info:
            finish(app, req)
        assert "\n" not in str(info.value)
        return str(info.value)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert error(request(broken)).startswith("broken.png: not a readable image")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert error(request(notes)).startswith("notes.txt: not a readable image")
    odd = write_face_like(tmp_path / "odd.png", size=81)
    assert error(request(odd)).startswith("odd.png: ") and "pass --resize" in error(request(odd))  # 4x SR: 81 px
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "small_mask.png")
    assert re.search(r"^mask file small_mask.png is 32x32 pixels.*, expected 64x64, the size face.png is restored at", error(
        request(face, "inpainting_box", mask_file=str(tmp_path / "small_mask.png"))))
    assert "needs its kernel (--kernel)" in error(request(face, "motion_blur", mode=MEASURED))
    assert "use --simulate" in error(request(face, "phase_retrieval", mode=MEASURED))
    assert "spgd has no setting 'nope'" in error(request(face, extra="nope=1"))
    assert "--lr: deqir has no setting 'lr'" in error(request(face, sampler="deqir", lr=0.5))
    assert error(request(face, steps=0)) == "Steps must be >= 1, got 0"
    assert "GOPRO_wVAE.pth" in error(request(face, "nonlinear_blur"))
    assert error(request(face, str(tmp_path / "mine.yaml"))).startswith("unknown task")  # no server files
    with monkeypatch.context() as patch:
        patch.setattr(web.files, "MAX_UPLOAD_MB", 0.001)
        assert re.match(r"face.png: the file is \d+ KB, too large: the page takes images of up to 0.001 MB$",
                        error(request(face)))
    assert run_folders(app) == []
    assert finish(app, request(face))[0]["status"].startswith("Done")  # the app goes on


def test_divergence_is_reported_and_the_run_files_kept(app, face):
    result, _ = finish(app, request(face, "hdr", lr=1e30))
    assert "SPGD diverged at step" in result["status"] and "try a smaller lr" in result["status"]
    assert result["restored"] is None and result["slider"] is None
    assert {Path(f).name for f in result["files"]} == {"face_measurement.png", "grid.png", "metrics.json",
                                                       "config.yaml"}


def test_measured_input_with_a_painted_mask(app, face):
    canvas = np.zeros((256, 256, 4), np.uint8)
    canvas[64:128, 64:192, 3] = 255  # painted: rows 16-32, columns 16-48 of the 64x64 image
    result, _ = finish(app, request(face, "inpainting_box", mode=MEASURED,
                                    mask_drawing={"background": None, "layers": [canvas], "composite": None}))
    [run] = run_folders(app)
    mask = np.asarray(Image.open(run / "inputs" / "mask" / "painted.png"))
    assert mask.shape == (64, 64) and (mask[16:32, 16:48] == 0).all() and mask.sum() == 255 * (64 * 64 - 16 * 32)
    assert "tensor(1, 1, 64, 64)" in (run / "config.yaml").read_text()
    assert "No scores" in result["metrics"] and result["restored"]


def test_an_image_of_another_size_restores_at_its_own_size_with_a_mask_painted_on_it(app, tmp_path):
    """An 80x48 photo with the 64x64 prior: restored at 80x48 (tiled), the painted mask made at that size,
    the same run as `spgd restore` without --resize."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.open(write_face_like(tmp_path / "f.png", size=80)))[16:64]).save(photo)
    canvas = np.zeros((240, 240 * 48 // 80 * 80 // 48, 4), np.uint8)[:144, :240]  # the editor's 3x canvas, 240x144
    canvas[30:60, 60:150, 3] = 255  # rows 10-20, columns 20-50 of the photo
    result, _ = finish(app, request(photo, "inpainting_box", steps=2,
                                    mask_drawing={"background": None, "layers": [canvas], "composite": None}))
    [run] = run_folders(app)
    mask = np.asarray(Image.open(run / "inputs" / "mask" / "painted.png"))
    assert mask.shape == (48, 80) and (mask[10:20, 20:50] == 0).all() and (mask == 0).sum() == 10 * 30
    assert np.asarray(Image.open(run / "photo.png")).shape == (48, 80, 3)
    assert result["slider"][1].shape == (48, 80, 3) and "PSNR" in result["metrics"]
    assert yaml.safe_load((run / "config.yaml").read_text())["restored_sizes"] == {"photo.png": "80x48"}


def test_a_sampler_reporting_more_than_its_steps_leaves_the_total_open(app, tmp_path, monkeypatch):
    """DDNM's Mask-Shift reports every step of every tile: 3 tiles x 10 steps on a 128x64 image."""
    monkeypatch.setattr(web.jobs, "PREVIEW_S", 0.0)
    wide = tmp_path / "wide.png"
    Image.fromarray(np.concatenate([np.asarray(Image.open(write_face_like(tmp_path / f"{k}.png", seed=k)))
                                    for k in range(2)], axis=1)).save(wide)
    seen = []
    result, _ = finish(app, request(wide, sampler="ddnm", steps=10, extra="mask_shift=true"),
                       progress=lambda value, desc: seen.append(desc))
    assert result["status"].startswith("Done") and result["slider"][1].shape == (64, 128, 3)
    assert any("/10 " in d for d in seen) and seen[-1].startswith("step 30/?")  # polled: not every step is seen


def test_mask_from_drawing_counts_a_pixel_unknown_when_half_of_it_is_painted():
    assert web.mask_from_drawing(None, (4, 4)) is None
    assert web.mask_from_drawing({"layers": [np.zeros((8, 8, 4), np.uint8)]}, (4, 4)) is None
    layer = np.zeros((8, 8, 4), np.uint8)
    layer[0:2, 0:2, 3] = 255  # all of model pixel (0, 0)
    layer[2, 2:4, 3] = 255  # half of pixel (1, 1)
    layer[4, 4, 3] = 255  # a quarter of pixel (2, 2)
    mask = web.mask_from_drawing({"layers": [layer]}, (4, 4))
    assert mask[0, 0] == 0 and mask[1, 1] == 0 and mask[2, 2] == 255 and (mask == 0).sum() == 2


def test_a_drawn_kernel_is_the_one_simulating_draws_and_restores_a_measurement(app, face):
    import spgd
    from spgd.tasks import load_task

    path, picture = app.draw_kernel("motion_blur", "spgd", MODEL, 3)
    kernel = torch.from_numpy(np.load(path))
    op = spgd.make_operator(**load_task("motion_blur")["operator"])
    spgd.simulate(torch.rand(1, 3, 64, 64), op, seed=3)
    assert torch.equal(kernel, op.kernel[0].cpu()) and picture.shape == (128, 128, 3)
    assert app.show_kernel(path).shape == (128, 128, 3)
    result, _ = finish(app, request(face, "motion_blur", mode=MEASURED, kernel_file=path))
    assert result["status"].startswith("Done")
    np.save(Path(path).with_name("even.npy"), np.ones((4, 4)))
    with pytest.raises(PageError, match="even.npy: a blur kernel must be a square 2-D array of odd size"):
        app.show_kernel(str(Path(path).with_name("even.npy")))


def test_task_form_follows_the_operator(app):
    assert app.task_form("inpainting_box", "spgd") | {"note": ""} == {
        "mask": True, "kernel": False, "measured": True, "required": True, "steps": 200, "lr": 2.5,
        "steps_from": "sampler default", "lr_from": "task preset", "has_lr": True, "reference": False, "note": ""}
    motion = app.task_form("motion_blur", "deqir")
    assert motion["kernel"] and motion["required"] and not motion["has_lr"] and motion["steps"] == 100
    assert motion["reference"]  # DeqIR's initialisation can pull toward a reference image
    assert not app.task_form("phase_retrieval", "spgd")["measured"]
    assert "cannot run here" in app.task_form("nonlinear_blur", "spgd")["note"]


def test_a_measured_upload_shows_what_the_restore_reads_from_it(app, tmp_path):
    noisy = write_face_like(tmp_path / "noisy.png", size=96)
    pixels = np.asarray(Image.open(noisy), dtype=float)
    rng = np.random.default_rng(0)
    Image.fromarray(np.clip(pixels + 20 * rng.standard_normal(pixels.shape), 0, 255).round().astype(np.uint8)).save(noisy)
    note = app.task_form("denoising", "ddnm_plus", MODEL, str(noisy), MEASURED)["note"]
    level = float(re.search(r"From the image: sigma ([0-9.]+)", note).group(1))
    assert 17 < level < 22  # 20 of 255, clipped as the file holds it
    assert "From the image" not in app.task_form("denoising", "ddnm_plus", MODEL, str(noisy))["note"]  # simulating
    Image.open(noisy).save(tmp_path / "photo.jpg", quality=25)
    assert "From the image: quality 25, subsampling 4:2:0" in app.task_form(
        "jpeg", "ddnm", MODEL, str(tmp_path / "photo.jpg"), MEASURED)["note"]  # a file's own tables
    result, _ = finish(app, request(noisy, "denoising", sampler="ddnm_plus", mode=MEASURED, steps=10, extra=""))
    config = yaml.safe_load((Path(result["restored"]).parent / "config.yaml").read_text())
    assert config["estimated_from_the_measurement"]["noisy.png"]["sigma"] == level  # what the restore ran with


def test_a_blind_deblur_upload_gives_the_kernel_among_the_files_and_says_so(app, tmp_path):
    blurry = write_face_like(tmp_path / "shaken.png")
    result, _ = finish(app, request(blurry, "blind_deblur", sampler="fast_em", mode=MEASURED, steps=4,
                                    extra="refit_every=1"))
    assert result["status"].startswith("Done")
    names = [Path(f).name for f in result["files"]]
    assert "shaken_kernel.png" in names and "shaken_kernel.npy" in names
    assert "Estimated with the image: its kernel" in result["metrics"]
    assert "Estimated from the image: noise_sigma" in result["metrics"]  # the level the restore ran with


def test_visitors_never_see_each_others_runs(app, face, tmp_path):
    other = write_face_like(tmp_path / "other.png", seed=5)
    results, errors = {}, []

    def visit(session, image, steps):
        try:
            results[session] = finish(app, request(image, steps=steps), session=session)[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=visit, args=("a", face, 4)),
               threading.Thread(target=visit, args=("b", other, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    folders = {s: Path(r["restored"]).parent for s, r in results.items()}
    assert folders["a"] != folders["b"] and len(run_folders(app)) == 2
    assert Path(results["a"]["restored"]).name == "face.png" and Path(results["b"]["restored"]).name == "other.png"
    for session, result in results.items():
        assert all(Path(f).parent == folders[session] for f in result["files"])
    assert app.cancel("a") == "Cancelled."  # nothing of a's is running; b is not touched either


def test_show_input_checks_the_upload_and_fits_the_mask_canvas(app, face, tmp_path):
    shown, canvas = app.show_input(str(face), "spgd", MODEL, "super_resolution")
    assert shown.shape == (64, 64, 3) and canvas["background"].shape == (256, 256, 3)
    big = write_face_like(tmp_path / "portrait.png", size=120)
    assert app.show_input(str(big), "spgd", MODEL, "super_resolution")[1]["background"].shape == (240, 240, 3)  # its own pixels, doubled
    assert app.show_input(str(big), "spgd", MODEL, "super_resolution", resize=True)[1]["background"].shape == (256, 256, 3)
    huge = write_face_like(tmp_path / "huge.png", size=2000)
    assert app.show_input(str(huge), "spgd", MODEL, "super_resolution")[1]["background"].shape == (768, 768, 3)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(PageError, match=r"^bad.jpg: not a readable image"):
        app.show_input(str(tmp_path / "bad.jpg"), "spgd", MODEL, "super_resolution")
    assert app.show_input(None, "spgd", MODEL, "super_resolution") == (None, None)


def test_the_page_builds_and_queues_one_restore_per_worker(app):
    page = web.build_page(app)
    functions = {f.name: f for f in page.fns.values()}
    assert functions["on_run"].concurrency_limit == 1 and functions["on_run"].queue
    assert functions["on_cancel"].queue is False  # a cancel never waits behind the restore it cancels
    [canceller] = [f for f in page.fns.values() if f.cancels]
    assert canceller.cancels == [next(i for i, f in page.fns.items() if f.name == "on_run")]


def test_serve_command_line(monkeypatch, capsys, one_thread):
    import spgd.priors

    monkeypatch.setattr(spgd.priors, "builtin_priors", lambda: {})  # as long as builtin:faces64 is not shipped
    args = build_parser().parse_args(["serve", "-m", "a.pt", "-m", "b.pt", "--port", "8000"])
    assert args.model == ["a.pt", "b.pt"] and args.host == "127.0.0.1" and args.port == 8000
    assert main(["serve", "--threads", "1"]) == 2
    assert "no model to offer: pass --model FILE (no built-in prior ships with this install)" in capsys.readouterr().err
    assert main(["serve", "-m", "missing.pt", "--threads", "1"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if `spgd[web]` were not installed
    assert main(["serve", "-m", "missing.pt", "--threads", "1"]) == 2
    assert "spgd serve: error: spgd serve needs gradio: pip install 'spgd[web]'" in capsys.readouterr().err


def test_a_reference_image_reaches_a_sampler_that_takes_one(app, face, tmp_path):
    guide = write_face_like(tmp_path / "guide.png", seed=3)
    result, _ = finish(app, request(face, sampler="deqir", steps=2, reference_file=str(guide),
                                    extra="max_iter=3 init_steps=1 init_objective=l2 init_gradient=phantom"))
    assert result["status"].startswith("Done")
    config = yaml.safe_load((run_folders(app)[-1] / "config.yaml").read_text())
    assert Path(config["sampler_settings"]["reference"]).name == "guide.png"
    with pytest.raises(PageError, match="spgd takes no reference image"):
        finish(app, request(face, reference_file=str(guide)))


@pytest.fixture(scope="module")
def diffir_file(tmp_path_factory):
    from .test_diffir import _weights

    return _weights(tmp_path_factory.mktemp("diffir"), image_size=64)  # 4x SR weights trained at 64x64


def test_diffir_restores_with_its_weights_and_a_wrong_task_is_one_line(tiny_prior, tiny_prior_path, diffir_file,
                                                                        face, tmp_path, one_thread, monkeypatch):
    import shutil

    from spgd.diffir import model as diffir_model
    from spgd.diffir.model import DiffIRModel, load_diffir
    from spgd.methods import load_file

    monkeypatch.setattr(diffir_model, "BUILTIN_DIR", tmp_path / "builtin")  # none shipped
    assert isinstance(load_file(diffir_file), DiffIRModel)  # what `spgd serve --model FILE` loads
    assert not isinstance(load_file(tiny_prior_path), DiffIRModel)
    app = WebApp({MODEL: tiny_prior, "tiny-diffir": load_diffir(diffir_file, name="tiny-diffir")},
                 runs_dir=tmp_path / "served", offer_builtin=True)
    assert app.model_choices("spgd") == [web.BUILTIN, MODEL]  # a DiffIR file is no prior of the posterior samplers
    assert app.model_choices("diffir") == [web.BUILTIN, "tiny-diffir"]
    form = app.task_form("super_resolution", "diffir", "tiny-diffir")
    assert not form["has_lr"] and form["steps"] is None and not form["mask"] and not form["reference"]
    assert "the defaults of diffir (on_nan raise, mean_of 1, antithetic False, self_ensemble False)" in form["note"]
    assert "DiffIR tiny-diffir" in form["note"]
    assert app.task_sampler("denoising", "spgd") == "diffir"  # the preset's first method a model here serves
    assert app.task_sampler("super_resolution", "ddnm") == "spgd"
    priors_only = WebApp({MODEL: tiny_prior}, runs_dir=tmp_path / "priors")
    assert priors_only.task_sampler("denoising", "spgd") == "ddnm_plus"  # no trained restorer offered
    assert "cannot restore a inpainting measurement" in app.task_form("inpainting_random", "diffir", "tiny-diffir")["note"]

    def diffir(task="super_resolution", model="tiny-diffir") -> RestoreRequest:
        return RestoreRequest(image=str(face), task=task, sampler="diffir", model=model, seed=2)

    result, _ = finish(app, diffir())
    assert result["status"].startswith("Done") and "PSNR" in result["metrics"]
    [run] = run_folders(app)
    cli = tmp_path / "cli"
    assert main(["restore", "-i", str(face), "-t", "super_resolution", "--sampler", "diffir", "-m", str(diffir_file),
                 "--simulate", "--resize", "--seed", "2", "--threads", "1", "-o", str(cli)]) == 0
    assert (run / "face.png").read_bytes() == (cli / "face.png").read_bytes()  # the command line's restore
    assert yaml.safe_load((run / "config.yaml").read_text())["model"] == "tiny-diffir"

    def error(req) -> str:
        with pytest.raises(PageError) as info:
            finish(app, req)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert re.search(r"DiffIR weights trained for super_resolution .*cannot restore a inpainting measurement",
                     error(diffir("inpainting_random")))
    assert error(diffir(model=web.BUILTIN)) == ("no built-in DiffIR weights for task super_resolution (built-in "
                                               "ones: none); train them with `spgd train-diffir` and pass --model FILE")
    spgd_with_diffir = RestoreRequest(image=str(face), task="super_resolution", model="tiny-diffir")
    assert error(spgd_with_diffir) == f"model 'tiny-diffir' cannot restore with spgd; spgd restores with: {web.BUILTIN}, tiny"
    assert error(diffir(model=MODEL)) == f"model 'tiny' cannot restore with diffir; diffir restores with: {web.BUILTIN}, tiny-diffir"
    assert len(run_folders(app)) == 1  # the refused requests left nothing
    assert finish(app, diffir())[0]["status"].startswith("Done")  # and the server goes on

    (tmp_path / "builtin").mkdir()
    shutil.copyfile(diffir_file, tmp_path / "builtin" / "faces64_sr4.safetensors")
    assert finish(app, diffir(model=web.BUILTIN))[0]["status"].startswith("Done")
    loaded = app.cache["builtin:diffir-faces64_sr4"]  # loaded once, by its name
    assert loaded.chosen == "chosen for 64x64"  # the face at its own size
    assert finish(app, diffir(model=web.BUILTIN))[0]["status"].startswith("Done")
    assert app.cache["builtin:diffir-faces64_sr4"] is loaded


def test_a_diffir_run_on_the_page_can_be_cancelled(diffir_file, face, tmp_path, one_thread):
    """The page's cancel reaches a trained restorer too: it stops before the network's next block (here the
    visitor cancels while the network's first block runs), and nothing of the run is kept."""
    from spgd.diffir.model import load_diffir

    model = load_diffir(diffir_file, name="tiny-diffir")
    app = WebApp({"tiny-diffir": model}, runs_dir=tmp_path / "served")
    first = next(m for m in model.network.modules() if not list(m.children()))
    hook = first.register_forward_hook(lambda *_: app.cancel("visitor"))
    try:
        result, _ = finish(app, RestoreRequest(image=str(face), task="super_resolution", sampler="diffir",
                                               model="tiny-diffir"), session="visitor")
    finally:
        hook.remove()
    assert result["status"].startswith("Cancelled") and run_folders(app) == [] and app.running() == 0
    assert finish(app, RestoreRequest(image=str(face), task="super_resolution", sampler="diffir",
                                      model="tiny-diffir"))[0]["status"].startswith("Done")  # the server goes on


def test_a_server_of_diffir_weights_only_opens_on_diffir(diffir_file, tmp_path):
    from spgd.diffir.model import load_diffir

    app = WebApp({"tiny-diffir": load_diffir(diffir_file, name="tiny-diffir")}, runs_dir=tmp_path / "served")
    page = web.build_page(app)
    shown = {b.elem_id: b for b in page.blocks.values() if getattr(b, "elem_id", None) in ("sampler", "model")}
    assert shown["sampler"].value == "diffir" and shown["model"].value == "tiny-diffir"


def test_the_builtin_prior_is_chosen_by_the_uploaded_image(tmp_path, monkeypatch, one_thread):
    """Served with the built-in priors, the page's default model for a posterior sampler is `BUILTIN`: a photo
    restores with the natural prior and a 64x64 face with the face prior (each the run of that prior chosen by
    name, byte for byte, and named in config.yaml); a visitor's own prior offered first stays the default."""
    from spgd import load_prior
    from spgd.priors import loaders
    from spgd.run import make_spec

    from .test_priors import _ship_tiny_priors

    monkeypatch.setattr(loaders, "BUILTIN_DIR", tmp_path / "builtin")
    (tmp_path / "builtin").mkdir()
    _ship_tiny_priors(tmp_path / "builtin", ["faces64", "natural"])
    builtins = {name: load_prior(name) for name in ("builtin:faces64", "builtin:natural")}
    app = WebApp(builtins, runs_dir=tmp_path / "served", offer_builtin=True)
    assert app.model_choices("ddnm") == [web.BUILTIN, "builtin:faces64", "builtin:natural"]
    assert "chosen by the image" in app.task_form("super_resolution", "ddnm")["note"]
    assert app.image_size("ddnm", web.BUILTIN, "super_resolution") == (16, 16)  # the tiny built-ins' side
    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.open(write_face_like(tmp_path / "f.png", size=80)))[16:64]).save(photo)
    face = write_face_like(tmp_path / "face.png")
    for image, expected in ((photo, "builtin:natural"), (face, "builtin:faces64")):
        chosen = request(image, sampler="ddnm", steps=2, extra="", model=web.BUILTIN)
        named = request(image, sampler="ddnm", steps=2, extra="", model=expected)
        before = set(run_folders(app))
        assert finish(app, chosen)[0]["status"].startswith("Done")
        [by_choice] = set(run_folders(app)) - before
        assert finish(app, named)[0]["status"].startswith("Done")
        [by_name] = set(run_folders(app)) - before - {by_choice}
        assert yaml.safe_load((by_choice / "config.yaml").read_text())["model"] == expected
        assert (by_choice / image.name).read_bytes() == (by_name / image.name).read_bytes()
        # the form shows the settings of the prior that runs on this image, before Restore is pressed
        form = app.task_form("super_resolution", "ddnm", web.BUILTIN, str(image))
        assert f"from {expected}" in form["note"]
        assert form["steps"] == make_spec(builtins[expected], "super_resolution", "ddnm").settings["steps"]
    assert set(app.cache) == {"builtin:faces64", "builtin:natural"}  # each loaded once, by its name
    faces_only = WebApp({"builtin:faces64": builtins["builtin:faces64"]}, runs_dir=tmp_path / "faces")
    assert faces_only.model_choices("spgd") == ["builtin:faces64"]
    with pytest.raises(PageError, match="is not offered here; spgd restores with: builtin:faces64"):
        next(faces_only.restore(request(face, model=web.BUILTIN)))
