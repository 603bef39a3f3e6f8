"""Any checkpoint: diffusers folders, cosine-schedule ADM files, wrapped callables of every parameterisation,
and public checkpoints fetched by name (tested against a server on the loopback address).

Each conversion is checked exactly: the diffusers adapter against x0 computed directly from diffusers'
own scheduler arithmetic, the wrapped callables against a Gaussian data distribution whose exact
denoiser D(x, sigma) = m + c^2 / (c^2 + sigma^2) (x - m) is known in closed form.
"""
from __future__ import annotations

import hashlib
import http.server
import math
import threading

import numpy as np
import pytest
import torch

import spgd
from spgd.cli import main
from spgd.priors import (
    EDM,
    VE,
    CheckpointError,
    RectifiedFlow,
    VPContinuous,
    VPDiscrete,
    build_network,
    hub,
    load_prior,
    wrap,
)
from spgd.samplers import SAMPLERS
from spgd.schedule import cosine_alpha_bars, linear_alpha_bars, sigmas_from_alpha_bars
from spgd.seeding import make_generators

from .test_contracts import SETTINGS

pytestmark = pytest.mark.usefixtures("one_thread")
diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed (pip install 'spgd[diffusers]')")

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def tiny_unet(out_channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=out_channels, block_out_channels=(32, 32),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    for p in unet.parameters():  # diffusers zero-initialises nothing we rely on, but make every output non-trivial
        p.data.add_(0.01 * torch.randn_like(p))
    return unet.eval()


def save_diffusers(folder, schedule: str, prediction: str, pipeline: bool, out_channels: int = 3):
    unet = tiny_unet(out_channels)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=schedule, prediction_type=prediction,
                                        variance_type="learned_range" if out_channels == 6 else "fixed_small")
    if pipeline:
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    else:
        unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    return unet, scheduler


def reference_x0(unet, scheduler, x: torch.Tensor, sigma: float, timestep: str = "interpolate") -> torch.Tensor:
    """x0 at EDM noise level sigma, from diffusers' alphas_cumprod and its UNet called directly."""
    abar = scheduler.alphas_cumprod.double()
    ladder = ((1 - abar) / abar).sqrt()
    if sigma <= ladder[0]:
        t = 0.0
    elif sigma >= ladder[-1]:
        t = float(len(ladder) - 1)
    else:
        k = int(torch.searchsorted(ladder, torch.tensor(sigma, dtype=torch.float64))) - 1
        t = k + (math.log(sigma) - math.log(ladder[k])) / (math.log(ladder[k + 1]) - math.log(ladder[k]))
        t = float(round(t)) if timestep == "nearest" else t
    a = 1 / (1 + sigma ** 2)  # alpha_bar of this noise level
    x_vp = math.sqrt(a) * x
    out = unet(x_vp, torch.full((x.shape[0],), t)).sample[:, :3].double()
    if scheduler.config.prediction_type == "epsilon":
        return (x_vp.double() - math.sqrt(1 - a) * out) / math.sqrt(a)
    if scheduler.config.prediction_type == "v_prediction":
        return math.sqrt(a) * x_vp.double() - math.sqrt(1 - a) * out
    return out


@pytest.mark.parametrize("pipeline", [False, True], ids=["model-folder", "pipeline-folder"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_diffusers_unet_denoises_as_its_own_scheduler_arithmetic(tmp_path, schedule, prediction, pipeline):
    unet, scheduler = save_diffusers(tmp_path, schedule, prediction, pipeline)
    prior = load_prior(tmp_path)
    ladder = sigmas_from_alpha_bars(scheduler.alphas_cumprod.double())
    torch.testing.assert_close(prior.ladder, ladder)
    assert prior.image_size == 16 and prior.image_channels == 3 and "diffusers UNet2DModel" in prior.description
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    between = math.sqrt(float(ladder[499]) * float(ladder[500]))
    for sigma in (float(ladder[0]), float(ladder[500]), float(ladder[-1]), between, 0.5 * float(ladder[0]),
                  2 * float(ladder[-1])):
        with torch.no_grad():
            got, want = prior.denoise(x * math.sqrt(1 + sigma ** 2), sigma), \
                reference_x0(unet, scheduler, x * math.sqrt(1 + sigma ** 2), sigma)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * max(1.0, sigma))


def test_diffusers_nearest_timestep_and_learned_variance_outputs(tmp_path):
    from spgd.priors.diffusers_prior import load_diffusers_prior

    unet, scheduler = save_diffusers(tmp_path, "linear", "epsilon", pipeline=False, out_channels=6)
    prior = load_diffusers_prior(tmp_path, timestep="nearest")
    sigma = math.sqrt(float(prior.ladder[300]) * float(prior.ladder[301]))
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(prior.denoise(x, sigma).double(),
                                   reference_x0(unet, scheduler, x, sigma, "nearest"), rtol=1e-5, atol=1e-5)


def test_wrong_or_partial_diffusers_folders_name_what_is_missing(tmp_path, capsys):
    save_diffusers(tmp_path / "pipe", "linear", "epsilon", pipeline=True)
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"pipe: a diffusers folder without scheduler/scheduler_config.json"):
        load_prior(tmp_path / "pipe")
    save_diffusers(tmp_path / "model", "linear", "epsilon", pipeline=False)
    (tmp_path / "model" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights in the folder"):
        load_prior(tmp_path / "model")
    (tmp_path / "empty").mkdir()
    assert main(["sample", "-m", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 2
    assert "empty: a folder, but not a diffusers model" in capsys.readouterr().err


def measurement(prior, size: int):
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.05)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1,
                                        size=(size, size), mode="bilinear", align_corners=False)
    return op, op.measure(x, make_generators(0, 1, "measure"))


def cosine_adm(folder) -> torch.nn.Module:
    """A tiny random ADM file whose config says the cosine schedule; returns the network."""
    config = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="",
                  num_head_channels=32, learn_sigma=True, noise_schedule="cosine", diffusion_steps=1000)
    torch.manual_seed(0)
    network = build_network(config)
    for p in network.parameters():  # the output layers start at zero: make them do something
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.02)
    torch.save({"config": config, "state_dict": network.state_dict()}, folder / "cosine.pt")
    return network.eval()


def restoring_prior(kind: str, folder):
    if kind == "diffusers-cosine-v":
        save_diffusers(folder, "squaredcos_cap_v2", "v_prediction", pipeline=True)
        return load_prior(folder)
    if kind == "adm-cosine":
        cosine_adm(folder)
        return load_prior(folder / "cosine.pt")
    prediction, schedule = {"callable-v": ("v", VPContinuous()), "callable-edm-x0": ("x0", EDM()),
                            "callable-flow": ("velocity", RectifiedFlow())}[kind]
    return wrap(make_net(prediction, schedule), prediction=prediction, schedule=schedule, image_size=16)


@pytest.mark.parametrize("kind", ["diffusers-cosine-v", "adm-cosine", "callable-v", "callable-edm-x0", "callable-flow"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_restores_with_every_kind_of_prior(tmp_path, name, kind):
    if name in ("diffpir", "fast_em") and kind == "adm-cosine":
        pytest.skip("a random ADM's D at the cosine ladder's top level (sigma 2e4) is 2e4 times the image scale; "
                    "DiffPIR's first data step (Fast EM's too) keeps it and its guard rightly stops the run (a "
                    "trained network predicts the mean image there)")
    prior = restoring_prior(kind, tmp_path)
    op, y = measurement(prior, 16)
    with torch.no_grad():
        blank = (op.A(torch.zeros(1, 3, 16, 16)) - y).norm()
    out = SAMPLERS[name](prior, op, y, seed=0, progress=False, **{**SETTINGS[name], **ENOUGH.get(name, {})})
    assert torch.isfinite(out).all() and out.shape == (1, 3, 16, 16)
    assert (op.A(out.clamp(-1, 1)) - y).norm() < blank  # it fits the measurement better than a blank image


def test_sample_command_works_with_a_diffusers_prior(tmp_path, capsys):
    save_diffusers(tmp_path / "model", "linear", "epsilon", pipeline=False)
    assert main(["sample", "-m", str(tmp_path / "model"), "--n", "2", "--steps", "3", "--out", str(tmp_path / "s")]) == 0
    assert "spgd: model: diffusers UNet2DModel" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "s" / "images").iterdir()) == ["000000.png", "000001.png"]


# the contract tests' settings, with enough guidance for the samplers whose few steps do not reach the data
ENOUGH = {"dps": dict(steps=200, zeta=1.0),
          "spgd": dict(steps=20, inner_steps=5, lr=2.0, sigma_max=1.0),
          "daps": dict(steps=10, ode_steps=2, langevin_steps=20, lr=1e-2, tau=0.05),
          "pnpdm": dict(steps=10, rho=0.3, rho_min=0.05)}


def test_cosine_schedule_adm_file_is_read_from_its_config(tmp_path):
    network = cosine_adm(tmp_path)
    prior = load_prior(tmp_path / "cosine.pt")
    torch.testing.assert_close(prior.ladder, sigmas_from_alpha_bars(cosine_alpha_bars(1000)))
    assert "cosine schedule" in prior.description
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    for k in (0, 250, 999):
        sigma = float(prior.ladder[k])
        with torch.no_grad():
            eps = network(x / math.sqrt(1 + sigma ** 2), torch.tensor([float(k)]))[:, :3]
            torch.testing.assert_close(prior.denoise(x, sigma), x - sigma * eps, rtol=1e-5, atol=1e-5 * sigma)


# --- callables of every parameterisation, against an exact Gaussian denoiser ---------------------

M, C = 0.1, 0.5  # data: every pixel N(M, C^2), independent


def exact(x: torch.Tensor, sigma) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return M + C ** 2 / (C ** 2 + sigma ** 2) * (x - M)


def make_net(kind: str, schedule):
    """An exact network of one parameterisation, turning its time argument back into sigma its own way."""
    def to_sigma(t: torch.Tensor) -> torch.Tensor:
        if isinstance(schedule, VPDiscrete):
            log_ladder = schedule.ladder().log().numpy()
            return torch.from_numpy(np.exp(np.interp(t.double().numpy(), np.arange(len(log_ladder)), log_ladder)))
        if isinstance(schedule, VPContinuous):
            t = t.double()
            return (torch.exp(schedule.beta_min * t + 0.5 * (schedule.beta_max - schedule.beta_min) * t ** 2) - 1).sqrt()
        if isinstance(schedule, RectifiedFlow):
            return (t / (1 - t)).double()
        return t.double()

    def net(inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = to_sigma(t).reshape(-1, 1, 1, 1)
        a = 1 / (1 + s ** 2).sqrt()
        vp = isinstance(schedule, (VPDiscrete, VPContinuous))
        x = inp / a if vp else inp * (1 + s) if isinstance(schedule, RectifiedFlow) else inp
        d = exact(x, s)
        n = (x - d) / s
        return {"epsilon": n, "v": a * n - s * a * d, "score": -n / s, "velocity": n - d, "x0": d}[kind]
    return net


CALLABLES = {
    "vp-discrete-epsilon": ("epsilon", VPDiscrete(linear_alpha_bars())),
    "vp-discrete-v": ("v", VPDiscrete(cosine_alpha_bars(500))),
    "vp-continuous-epsilon": ("epsilon", VPContinuous()),
    "vp-continuous-v": ("v", VPContinuous(beta_min=0.5, beta_max=15.0)),
    "ve-epsilon": ("epsilon", VE()),
    "ve-score": ("score", VE(0.02, 50.0)),
    "edm-x0": ("x0", EDM()),
    "flow-velocity": ("velocity", RectifiedFlow()),
}


@pytest.mark.parametrize("kind", sorted(CALLABLES))
def test_wrapped_callables_give_the_exact_denoiser(kind):
    prediction, schedule = CALLABLES[kind]
    prior = wrap(make_net(prediction, schedule), prediction=prediction, schedule=schedule)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for sigma in (prior.sigma_min * 1.5, 0.3, 1.0, 7.0, prior.sigma_max * 0.9):
        noisy = x * math.sqrt(C ** 2 + sigma ** 2) + M
        torch.testing.assert_close(prior.denoise(noisy, sigma), exact(noisy, sigma), rtol=1e-6, atol=1e-6)
    sigmas = torch.tensor([0.3, 2.0, 9.0], dtype=torch.float64)  # one level per image
    torch.testing.assert_close(prior.denoise(x, sigmas), exact(x, sigmas), rtol=1e-6, atol=1e-6)


def test_wrapped_prior_restores_and_rejects_predictions_its_schedule_has_not():
    prior = wrap(make_net("velocity", RectifiedFlow()), prediction="velocity", schedule=RectifiedFlow(),
                 image_size=16)
    op, y = measurement(prior, 16)
    out = spgd.restore(y.double(), op, prior, steps=10, inner_steps=2, lr=0.5, progress=False)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"a RectifiedFlow network predicts one of \('velocity', 'x0'\), not 'v'"):
        wrap(make_net("v", RectifiedFlow()), prediction="v", schedule=RectifiedFlow())


# --- public checkpoints by name, from a loopback server ---------------------------------------------

class Files(http.server.BaseHTTPRequestHandler):
    """/<name> serves FILES[name] with HTTP Range support; /cut/<name> sends only half on its first request."""

    files: dict[str, bytes] = {}
    log: list[str] = []
    cut_once: set[str] = set()

    def do_GET(self):  # noqa: N802 - http.server's API
        self.log.append(f"{self.path} {self.headers.get('Range', '')}")
        cut = self.path.startswith("/cut/")
        name = self.path.removeprefix("/cut/").lstrip("/")
        if name not in self.files:
            self.send_error(404, "Not Found")
            return
        data = self.files[name]
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut and name not in self.cut_once:
            self.cut_once.add(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the transfer breaks off half-way
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Files.files, Files.log, Files.cut_once = {}, [], set()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def tiny_public(tmp_path, monkeypatch):
    """A small ADM file standing in for a public checkpoint: (its bytes, the cache folder)."""
    config = dict(image_size=16, num_channels=32, channel_mult="1,2", num_res_blocks=1, attention_resolutions="",
                  num_head_channels=32, learn_sigma=False)
    torch.manual_seed(0)
    torch.save(build_network(config).state_dict(), tmp_path / "net.pt")
    data = (tmp_path / "net.pt").read_bytes()
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPGD_MODELS", str(cache))
    for name, sha in (("ffhq256", hashlib.sha256(data).hexdigest()), ("imagenet256", None)):
        monkeypatch.setitem(hub.PUBLIC_CHECKPOINTS, name, hub.PublicCheckpoint(
            url="http://127.0.0.1:9/unreachable", filename=f"{name}.pt", arch=config, source=f"the {name} file",
            licence="test", size=len(data) if sha else None, sha256=sha))
    return data, cache


def test_public_checkpoint_downloads_verifies_and_loads_by_name(server, tiny_public, monkeypatch):
    data, cache = tiny_public
    Files.files["ffhq256.pt"] = data
    path = hub.fetch_checkpoint("ffhq256", url=f"{server}/ffhq256.pt")
    assert path == cache / "ffhq256.pt" and path.read_bytes() == data
    assert not list(cache.glob("*.part"))
    monkeypatch.setitem(hub.PUBLIC_CHECKPOINTS, "ffhq256",
                        hub.PublicCheckpoint(**{**hub.PUBLIC_CHECKPOINTS["ffhq256"].__dict__, "url": "http://127.0.0.1:9/x"}))
    prior = load_prior("ffhq256")  # cached: no network needed, verified again
    assert prior.image_size == 16 and "from ffhq256" in prior.description


def test_interrupted_download_resumes_where_it_stopped(server, tiny_public):
    data, cache = tiny_public
    Files.files["ffhq256.pt"] = data
    with pytest.raises(hub.CheckpointFetchError, match="the same command resumes it"):
        hub.fetch_checkpoint("ffhq256", url=f"{server}/cut/ffhq256.pt")
    part = cache / "ffhq256.pt.part"
    assert 0 < part.stat().st_size < len(data)
    kept = part.stat().st_size
    assert hub.fetch_checkpoint("ffhq256", url=f"{server}/cut/ffhq256.pt").read_bytes() == data
    assert Files.log[-1] == f"/cut/ffhq256.pt bytes={kept}-"


def test_truncated_corrupted_and_missing_downloads_are_refused(server, tiny_public):
    data, cache = tiny_public
    Files.files["short.pt"] = data[:-100]
    with pytest.raises(hub.CheckpointFetchError, match=f"ended after {len(data) - 100:,} of {len(data):,} bytes"):
        hub.fetch_checkpoint("ffhq256", url=f"{server}/short.pt")
    (cache / "ffhq256.pt.part").unlink()
    Files.files["bad.pt"] = bytes(len(data))
    with pytest.raises(hub.CheckpointFetchError, match="corrupt .*sha256 .* differs from the published .* deleted"):
        hub.fetch_checkpoint("ffhq256", url=f"{server}/bad.pt")
    assert not list(cache.glob("ffhq256*"))
    with pytest.raises(hub.CheckpointFetchError, match="HTTP 404"):
        hub.fetch_checkpoint("ffhq256", url=f"{server}/nothing.pt")


def test_unpublished_hash_is_recorded_at_the_first_download_and_checked_after(server, tiny_public):
    data, cache = tiny_public
    Files.files["imagenet.pt"] = data
    path = hub.fetch_checkpoint("imagenet256", url=f"{server}/imagenet.pt")
    assert (cache / "imagenet256.pt.sha256").read_text().strip() == hashlib.sha256(data).hexdigest()
    path.write_bytes(data[:-1] + b"x")
    with pytest.raises(hub.CheckpointFetchError, match="recorded at its first download"):
        hub.fetch_checkpoint("imagenet256", url=f"{server}/imagenet.pt")


def test_public_name_offline_is_one_line_saying_where_to_put_the_file(tiny_public, capsys):
    _, cache = tiny_public
    assert main(["sample", "-m", "ffhq256", "--out", str(cache / "s")]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot download ffhq256 from http://127.0.0.1:9/unreachable" in lines[0]
    assert f"put the file by hand at {cache / 'ffhq256.pt'} (the ffhq256 file)" in lines[0]
