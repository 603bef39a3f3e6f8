"""The tiled denoiser: any size from a fixed-size prior, without any sampler knowing."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from spgd.priors.tiled import GRAPH_BUDGET_MIB, TiledDenoiser, _SavedBytes
from spgd.samplers import SAMPLERS
from spgd.tiles import tile_starts


class ConvDenoiser(nn.Module):
    """A 16x16 'prior' whose denoiser is a convolution (zero-padded, radius 2) shrunk by 1/(1 + sigma^2):
    the MMSE denoiser of a stationary Gaussian with that filter as its Wiener filter."""

    image_channels, sigma_min, sigma_max, image_size = 3, 0.01, 80.0, 16
    ladder = torch.logspace(-2, 1.9, 1000, dtype=torch.float64)

    def __init__(self, channels: int = 3, size: int = 16) -> None:
        super().__init__()
        self.image_channels, self.image_size = channels, size
        self.conv = nn.Conv2d(channels, channels, 5, padding=2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(channels, channels, 5, 5, generator=torch.Generator().manual_seed(0))
                                   / (25 * channels))

    def denoise(self, x, sigma):
        s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.conv(x) / (1 + s ** 2)


class NonlinearDenoiser(ConvDenoiser):
    """Attention-free but nonlinear, with a per-tile statistic (like GroupNorm), so tiling is not exact."""

    def denoise(self, x, sigma):
        h = torch.tanh(super().denoise(x, sigma))
        return h - h.mean(dim=(-2, -1), keepdim=True) + x.mean(dim=(-2, -1), keepdim=True)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_tile_starts_cover_the_axis_with_the_last_tile_flush():
    assert tile_starts(16, 16, 8) == [0]
    assert tile_starts(10, 16, 8) == [0]
    assert tile_starts(37, 16, 8) == [0, 8, 16, 21]
    assert tile_starts(200, 64, 32) == [0, 32, 64, 96, 128, 136]


@pytest.mark.parametrize("height, width", [(16, 16), (37, 31), (40, 64), (9, 23)])
def test_weights_are_a_partition_of_unity_and_constants_stay_constant(height, width):
    tiled = TiledDenoiser(ConvDenoiser(), overlap=8, halo=2)
    padded_h, padded_w = max(height, 16), max(width, 16)
    spots, weights = tiled.grid(padded_h, padded_w)
    total = torch.zeros(padded_h, padded_w, dtype=torch.float64)
    for (t, l), w in zip(spots, weights):
        assert (w >= 0).all()
        total[t:t + 16, l:l + 16] += w
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    identity = TiledDenoiser(type("Id", (ConvDenoiser,), {"denoise": lambda self, x, s: x})(), overlap=8, halo=2)
    const = torch.full((2, 3, height, width), 0.37)
    torch.testing.assert_close(identity.denoise(const, 1.0), const)


def test_one_tile_image_is_the_prior_itself():
    prior = NonlinearDenoiser()
    x = rand(2, 3, 16, 16)
    assert torch.equal(TiledDenoiser(prior).denoise(x, torch.tensor([0.5, 2.0])), prior.denoise(x, torch.tensor([0.5, 2.0])))


@pytest.mark.parametrize("height, width", [(37, 31), (64, 48), (50, 50)])
def test_a_convolution_of_support_at_most_the_halo_equals_the_whole_image_result(height, width):
    prior = ConvDenoiser()  # radius 2: any halo >= 2 is exact
    x, sigma = rand(2, 3, height, width), torch.tensor([0.3, 3.0])
    whole = prior.denoise(x, sigma)
    torch.testing.assert_close(TiledDenoiser(prior, overlap=8, halo=2).denoise(x, sigma), whole, rtol=0, atol=1e-6)
    assert (TiledDenoiser(prior, overlap=8, halo=0).denoise(x, sigma) - whole).abs().max() > 1e-3  # no halo: not exact


@pytest.mark.parametrize("budget", [0, GRAPH_BUDGET_MIB])  # every tile computed again / every graph kept
def test_per_tile_gradient_equals_autograd_through_the_blend(budget):
    prior = NonlinearDenoiser()
    tiled = TiledDenoiser(prior, overlap=8, halo=2, batch=3, graph_budget_mib=budget)
    x, sigma, g = rand(2, 3, 37, 31), torch.tensor([0.5, 1.5]), rand(2, 3, 37, 31, seed=1)
    x1 = x.clone().requires_grad_(True)
    (grad_tiled,) = torch.autograd.grad((tiled.denoise(x1, sigma) * g).sum(), x1)
    # the same blend written out with plain autograd (keeps every tile's graph)
    x2 = x.clone().requires_grad_(True)
    spots, weights = tiled.grid(37, 31)
    out = torch.zeros(2, 3, 37, 31)
    for (t, l), w in zip(spots, weights.float()):
        out = out + nn.functional.pad(w * prior.denoise(x2[..., t:t + 16, l:l + 16], sigma),
                                      (l, 31 - l - 16, t, 37 - t - 16))
    (grad_plain,) = torch.autograd.grad((out * g).sum(), x2)
    torch.testing.assert_close(grad_tiled, grad_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiled.denoise(x, sigma), out.detach(), rtol=1e-5, atol=1e-6)


def test_results_do_not_depend_on_the_batch_or_the_tile_batch():
    tiled = TiledDenoiser(NonlinearDenoiser(), overlap=8, halo=2, batch=5)
    x, sigma = rand(3, 3, 30, 45), torch.tensor([0.2, 1.0, 4.0])
    together = tiled.denoise(x, sigma)
    alone = torch.cat([TiledDenoiser(NonlinearDenoiser(), overlap=8, halo=2, batch=1).denoise(x[i:i + 1], sigma[i])
                       for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_the_prior_s_statements_pass_through_and_bad_grids_are_refused():
    prior = ConvDenoiser()
    tiled = TiledDenoiser(prior)
    assert tiled.image_size is None and tiled.sigma_max == 80.0 and tiled.image_channels == 3
    assert torch.equal(tiled.ladder, prior.ladder) and (tiled.tile, tiled.overlap, tiled.halo) == (16, 8, 2)
    with pytest.raises(ValueError, match="2 \\* halo <= overlap"):
        TiledDenoiser(prior, overlap=4, halo=3)


@pytest.mark.parametrize("height, width, size, overlap, halo", [(100, 76, 16, 8, 2), (768, 1024, 64, None, None)])
def test_gradients_keep_graphs_up_to_the_budget_and_compute_the_other_tiles_again(height, width, size, overlap, halo):
    """Forward keeps the graphs of the first tile batches until they hold the budget (then one batch more at
    most) and no others; backward computes the other tiles again, at most `batch` per network call: memory
    of the budget plus one tile batch, whatever the image (1024x768 with a 64-px prior: 713 tiles). The
    output and gradient are the same, bit for bit, for every budget and in a repeated backward pass."""
    calls = []

    class Recording(NonlinearDenoiser):
        def denoise(self, x, sigma):
            calls.append((x.shape[0], torch.is_grad_enabled() and x.requires_grad))
            return super().denoise(x, sigma)

    one_batch = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(one_batch, lambda t: t):
        NonlinearDenoiser(size=size).denoise(rand(4, 3, size, size).requires_grad_(True), torch.ones(4))
    x = rand(1, 3, height, width).requires_grad_(True)
    kept, grads, outs = {}, {}, {}
    for budget in (0, 2.5 * one_batch.total / 2 ** 20, 1e9):
        calls.clear()
        tiled = TiledDenoiser(Recording(size=size), overlap=overlap, halo=halo, batch=4, graph_budget_mib=budget)
        out = tiled.denoise(x, 1.0)
        forward_calls, tiles = list(calls), len(tiled.grid(height, width)[0])
        assert sum(n for n, _ in forward_calls) == tiles and all(n <= 4 for n, _ in forward_calls)
        keeps = [g for _, g in forward_calls]
        assert keeps == sorted(keeps, reverse=True)  # the first batches only
        kept[budget], outs[budget] = sum(n for n, g in forward_calls if g), out.detach()
        (grads[budget],) = torch.autograd.grad(out.sum(), x, retain_graph=True)
        backward_calls = calls[len(forward_calls):]
        assert sum(n for n, _ in backward_calls) == tiles - kept[budget]
        assert all(g and n <= 4 for n, g in backward_calls)
        again = len(calls)  # a second backward pass through the same graph (DeqIR's implicit gradient) runs every tile
        assert torch.equal(torch.autograd.grad(out.sum(), x)[0], grads[budget])
        assert sum(n for n, _ in calls[again:]) == tiles
    assert list(kept.values()) == [0, 12, tiles]  # 2.5 batches' budget: the third batch passes it
    for results in (grads, outs):  # kept or not, a tile's output and gradient are the same
        first, *others = results.values()
        assert all(torch.equal(first, other) for other in others)


def test_no_graph_is_kept_where_no_gradient_can_follow_and_a_dropped_graph_is_freed():
    """Under no_grad an input that requires grad gets no kept graphs; a call's kept graphs, dropped without a
    backward pass, are freed (a network that saves its own output, as tanh does, must not hold itself)."""
    outputs, inner, grad_modes = [], [], []

    class Watched(NonlinearDenoiser):
        def denoise(self, x, sigma):
            grad_modes.append(torch.is_grad_enabled())
            h = torch.tanh(ConvDenoiser.denoise(self, x, sigma))  # tanh's graph saves h
            inner.append(weakref.ref(h))
            out = 2 * h
            outputs.append(weakref.ref(out))
            return out

    tiled = TiledDenoiser(Watched(), overlap=8, halo=2, batch=3)
    x = rand(1, 3, 37, 31).requires_grad_(True)
    with torch.no_grad():
        tiled.denoise(x, 1.0)
    assert grad_modes and not any(grad_modes)
    grad_modes.clear(), outputs.clear()
    out = tiled.denoise(x, 1.0)
    assert all(grad_modes) and all(ref() is not None for ref in outputs)  # every graph kept
    del out
    gc.collect()
    assert all(ref() is None for ref in outputs + inner)


def test_only_sigma_requiring_grad_computes_no_tile_again_and_a_second_order_gradient_is_refused():
    calls = []

    class Counted(NonlinearDenoiser):
        def denoise(self, x, sigma):
            calls.append(x.shape[0])
            return super().denoise(x, sigma)

    tiled = TiledDenoiser(Counted(), overlap=8, halo=2, batch=3, graph_budget_mib=0)
    sigma = torch.tensor([1.0], requires_grad=True)
    out = tiled.denoise(rand(1, 3, 37, 31), sigma)
    forward = len(calls)
    assert torch.autograd.grad(out.sum(), sigma, allow_unused=True) == (None,) and len(calls) == forward
    x = rand(1, 3, 37, 31).requires_grad_(True)
    (grad,) = torch.autograd.grad((tiled.denoise(x, 1.0) * x).sum(), x, create_graph=True)  # the VJP's seed needs grad
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_api_restores_any_size_with_a_fixed_size_prior():
    import spgd

    prior = ConvDenoiser()
    op = spgd.make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=0.05)
    x = torch.rand(1, 3, 37, 31, generator=torch.Generator().manual_seed(0))
    y = spgd.simulate(x, op, seed=0)
    out = spgd.restore(y, op, prior, sampler="dps", steps=3, seed=0, progress=False)
    assert out.shape == (1, 3, 37, 31) and torch.isfinite(out).all()


SIZED = ["super_resolution", "inpainting", "blur", "gaussian_blur", "motion_blur", "phase_retrieval", "hdr"]


@pytest.mark.parametrize("operator_name", SIZED)
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_restores_a_200x136_image_with_a_32px_prior(sampler, operator_name):
    """Through spgd.restore, which tiles a fixed-size prior for another size; operators see the whole image.
    The 'prior' is a 5x5 convolution, narrower than the tiles' halo, so the tiled run must equal the run of
    the same denoiser on the whole image (measured: within 4e-4 in every case, mostly 1e-7), and be finite."""
    import spgd

    from .test_contracts import EXAMPLES, SETTINGS

    params, (channels, _, _) = EXAMPLES[operator_name]
    op = spgd.make_operator(operator_name, **params)
    x = torch.rand(1, channels, 136, 200, generator=torch.Generator().manual_seed(0))
    y = spgd.simulate(x, op, seed=0)
    settings = {**SETTINGS[sampler], **ANY_SIZE_SETTINGS.get((sampler, operator_name), {})}
    try:
        tiled, whole = (spgd.restore(y, op, ConvDenoiser(channels, size), sampler=sampler, seed=0, progress=False,
                                     **settings) for size in (32, None))
    except ValueError as exc:  # a sampler that needs what this operator lacks says so, at any size
        capability = {"a pseudo-inverse": "pinv", "a singular value decomposition": "svd", "an adjoint": "adjoint"}
        named = [c for words, c in capability.items() if f"needs an operator with {words}" in str(exc)]
        assert named and not op.supports(named[0]), exc
        return
    assert tiled.shape == x.shape and torch.isfinite(tiled).all()
    assert (tiled - whole).abs().max() < 1e-3


ANY_SIZE_SETTINGS = {("daps", "inpainting"): {"lr": 1e-4}}  # lr 1e-3 diverges on the conv 'prior' with holes


def _mask_shift_problem(height: int, width: int, name: str = "inpainting", seed: int = 0):
    import spgd

    mask = (torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(9)) < 0.5).float()
    params = {"inpainting": dict(mask=mask), "super_resolution": dict(scale=2)}[name]
    op = spgd.make_operator(name, noise_sigma=0.0, **params)
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return op, op.measure(x, [torch.Generator().manual_seed(k) for k in range(2)]), (2, 3, height, width)


def test_mask_shift_on_one_tile_is_ddnm_itself():
    from spgd.samplers.ddnm import ddnm

    op, y, shape = _mask_shift_problem(16, 16)
    kwargs = dict(seed=[3, 4], steps=8, eta=0.85, travel_length=2, travel_repeat=2, progress=False)
    plain = ddnm(ConvDenoiser(), op, y, **kwargs)
    tiled = ddnm(ConvDenoiser(), op, y, mask_shift=True, **kwargs)
    assert torch.equal(plain, tiled)


@pytest.mark.parametrize("name", ["inpainting", "super_resolution"])
def test_mask_shift_keeps_finished_tiles_and_fits_the_whole_measurement(name):
    """36x28 with 16-px tiles (a 4 x 3 grid): the whole image is consistent with y (noise-free DDNM), a batch
    equals its images run alone, and the network only ever sees one tile."""
    from spgd.samplers.ddnm import ddnm

    op, y, shape = _mask_shift_problem(36, 28, name)
    prior = TiledDenoiser(ConvDenoiser())
    out = ddnm(prior, op, y, seed=[5, 6], steps=5, eta=0.5, mask_shift=True, progress=False)
    assert out.shape == shape
    torch.testing.assert_close(op.A(out), op.A(op.A_pinv(y)), atol=1e-5, rtol=0)
    first = ddnm(prior, op, y[:1], seed=[5], steps=5, eta=0.5, mask_shift=True, progress=False)
    assert torch.equal(first, out[:1])
    calls = []
    base = prior.prior
    original = base.denoise
    base.denoise = lambda x, s: calls.append(tuple(x.shape[-2:])) or original(x, s)
    ddnm(prior, op, y, seed=[5, 6], steps=5, eta=0.5, mask_shift=True, progress=False)
    assert set(calls) == {(16, 16)} and len(calls) == 5 * 4 * 3  # every call one tile: 12 tiles x 5 steps


def test_mask_shift_refuses_an_image_smaller_than_a_tile():
    from spgd.samplers.ddnm import ddnm

    op, y, _ = _mask_shift_problem(12, 40)
    with pytest.raises(ValueError, match="at least one tile"):
        ddnm(TiledDenoiser(ConvDenoiser()), op, y, steps=3, mask_shift=True, progress=False)


def test_a_large_image_shows_a_bar_of_its_tiles_and_a_small_one_none(capsys):
    x = rand(1, 3, 48, 48)
    quiet = TiledDenoiser(ConvDenoiser(), batch=1)(x, 0.5)
    assert "tiles" not in capsys.readouterr().err  # off unless asked
    shown = TiledDenoiser(ConvDenoiser(), batch=1, progress=True)(x, 0.5)
    assert "25 tiles" in capsys.readouterr().err and torch.equal(quiet, shown)
    TiledDenoiser(ConvDenoiser(), batch=4, progress=True)(x, 0.5)  # 7 batches: under PROGRESS_BATCHES
    assert "tiles" not in capsys.readouterr().err


def test_mask_shift_finishes_its_first_tile_as_ddnm_on_that_crop_and_keeps_it():
    """16x24 inpainting, tiles at columns 0 and 8: the left 16 columns are DDNM's run on that crop (same x_T crop,
    same noise stream), untouched by the second tile whose overlap they are."""
    import spgd
    from spgd.samplers.ddnm import ddnm

    op, y, shape = _mask_shift_problem(16, 24)
    x_T = rand(*shape, seed=7)
    kwargs = dict(seed=[3, 4], steps=10, eta=0.85, progress=False)
    out = ddnm(TiledDenoiser(ConvDenoiser()), op, y, x_start=x_T, mask_shift=True, **kwargs)
    crop = spgd.make_operator("inpainting", mask=op.mask[..., :16], noise_sigma=0.0)
    alone = ddnm(ConvDenoiser(), crop, y[..., :16], x_start=x_T[..., :16], **kwargs)
    assert torch.equal(out[..., :16], alone) and not torch.equal(out[..., 16:], x_T[..., 16:])


def test_mask_shift_reports_a_failing_tile_and_returns_the_image_as_nan():
    from spgd.samplers.common import Trace
    from spgd.samplers.ddnm import ddnm

    class FailsOnce(ConvDenoiser):
        calls = 0

        def denoise(self, x, sigma):
            FailsOnce.calls += 1
            out = super().denoise(x, sigma)
            if FailsOnce.calls == 5 + 2:  # tile 2, its second step, image 0
                out = out.clone()
                out[0] = math.nan
            return out

    import math

    op, y, shape = _mask_shift_problem(16, 40)
    trace = Trace(curves=False)
    out = ddnm(TiledDenoiser(FailsOnce()), op, y, seed=[1, 2], steps=5, mask_shift=True, on_nan="mark", trace=trace,
               progress=False)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()
    assert trace.failed == {0: 6} and trace.reasons[0].startswith("DDNM mask-shift (tile 2 of 4) diverged at step 6")
    with pytest.raises(Exception, match=r"tile 2 of 4"):
        FailsOnce.calls = 0
        ddnm(TiledDenoiser(FailsOnce()), op, y, seed=[1, 2], steps=5, mask_shift=True, progress=False)


def test_a_true_or_false_setting_refuses_anything_else():
    from spgd.samplers import check_settings

    check_settings("ddnm", {"mask_shift": True})
    with pytest.raises(ValueError, match=r"--set: ddnm's mask_shift must be true or false, got 'flase'"):
        check_settings("ddnm", {"mask_shift": "flase"}, "--set")


@pytest.mark.parametrize("sampler", ["spgd", "dps", "ddnm", "diffpir"])
def test_seeded_results_at_an_odd_size_do_not_depend_on_the_batch(sampler):
    """37x31 through the tiled 16-px prior: a batch of two equals each image alone with its seed, and a rerun
    is identical."""
    import spgd

    from .test_contracts import SETTINGS

    mask = (torch.rand(1, 1, 37, 31, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    op = spgd.make_operator("inpainting", mask=mask, noise_sigma=0.05)
    x = torch.rand(2, 3, 37, 31, generator=torch.Generator().manual_seed(0))
    y = spgd.simulate(x, op, seed=[5, 6])
    run = dict(sampler=sampler, progress=False, on_nan="mark", **SETTINGS[sampler])  # a conv 'prior' may not fit
    both = spgd.restore(y, op, ConvDenoiser(), seed=[5, 6], **run)
    assert torch.isfinite(both).all()
    assert torch.equal(both, spgd.restore(y, op, ConvDenoiser(), seed=[5, 6], **run))
    for k in range(2):
        assert torch.equal(both[k:k + 1], spgd.restore(y[k:k + 1], op, ConvDenoiser(), seed=[5 + k], **run)), k


@pytest.mark.parametrize("height, width", [(37, 31), (9, 23), (40, 64), (16, 40)])
def test_random_shift_tiles_cover_every_pixel_once(height, width):
    """With an identity 'prior' the shifted tiling returns the image itself (the weights sum to one on it), with
    and without overlap."""
    prior = type("Id", (ConvDenoiser,), {"denoise": lambda self, x, s: x})()
    x = rand(2, 3, height, width)
    for identity in (TiledDenoiser(prior, shift=True, overlap=0, halo=0), TiledDenoiser(prior, shift=True)):
        torch.testing.assert_close(identity.for_seeds([3, 4]).denoise(x, torch.tensor([0.5, 2.0])), x,
                                   rtol=0, atol=1e-6)


def test_random_shift_offsets_come_from_the_seed_and_the_noise_level():
    tiled = TiledDenoiser(ConvDenoiser(), shift=True, overlap=0, halo=0)
    levels = torch.linspace(0.1, 10, 40)
    a = tiled.for_seeds([7]).offsets(levels, 100, 90)
    assert a == tiled.for_seeds([7]).offsets(levels, 100, 90)  # a function of (seed, sigma): reruns agree
    assert len(set(a)) > 30 and all(0 <= dy < 16 and 0 <= dx < 16 for dy, dx in a)  # moves with every level
    assert a != tiled.for_seeds([8]).offsets(levels, 100, 90)
    assert all(dy == 0 for dy, _ in tiled.for_seeds([7]).offsets(levels, 16, 90))  # one tile high: no shift
    assert tiled.for_seeds([1, 2]) is not tiled and TiledDenoiser(ConvDenoiser()).for_seeds([1]).seeds is None
    with pytest.raises(ValueError, match="for_seeds"):
        tiled.denoise(rand(1, 3, 37, 31), 1.0)
    with pytest.raises(ValueError, match="2 \\* halo <= overlap"):
        TiledDenoiser(ConvDenoiser(), shift=True, overlap=0, halo=2)
    assert (TiledDenoiser(ConvDenoiser(), shift=True).overlap, TiledDenoiser(ConvDenoiser(), shift=True).halo) == (4, 1)
    assert all(0 <= dy < 12 for dy, _ in TiledDenoiser(ConvDenoiser(), shift=True, overlap=4).for_seeds([7]).offsets(
        levels, 100, 90))  # offsets within one stride


def test_random_shift_results_do_not_depend_on_the_batch_and_stack_step_major():
    tiled = TiledDenoiser(NonlinearDenoiser(), shift=True, batch=5)
    x, sigma = rand(2, 3, 37, 45), torch.tensor([0.2, 4.0])
    together = tiled.for_seeds([5, 6]).denoise(x, sigma)
    alone = torch.cat([TiledDenoiser(NonlinearDenoiser(), shift=True, batch=1).for_seeds([5 + i]).denoise(x[i:i + 1], sigma[i])
                       for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    # steps x images in one call (DeqIR): image j uses seed j % 2, with its own sigma
    levels = torch.tensor([0.2, 4.0, 1.0, 1.0])
    stacked = tiled.for_seeds([5, 6]).denoise(torch.cat([x, x]), levels)
    torch.testing.assert_close(stacked[:2], together, rtol=0, atol=1e-6)
    torch.testing.assert_close(stacked[2:], tiled.for_seeds([5, 6]).denoise(x, 1.0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("budget", [0, GRAPH_BUDGET_MIB])  # computed again: the same shifts as forward's
def test_random_shift_gradient_equals_autograd_through_the_shifted_tiles(budget):
    prior = NonlinearDenoiser()
    tiled = TiledDenoiser(prior, shift=True, batch=3, graph_budget_mib=budget).for_seeds([2, 9])  # overlap 4, halo 1: stride 12
    x, sigma, g = rand(2, 3, 37, 31), torch.tensor([0.5, 1.5]), rand(2, 3, 37, 31, seed=1)
    x1 = x.clone().requires_grad_(True)
    (grad_tiled,) = torch.autograd.grad((tiled.denoise(x1, sigma) * g).sum(), x1)
    # written out: each image reflect-padded into a canvas a stride (12) larger at its offset, the canvas's grid
    x2 = x.clone().requires_grad_(True)
    ch, cw = 37 + 12, 31 + 12
    spots, weights = tiled.grid(ch, cw)
    outs = []
    for i, (dy, dx) in enumerate(tiled.offsets(sigma, 37, 31)):
        canvas = nn.functional.pad(x2[i:i + 1], (dx, cw - 31 - dx, dy, ch - 37 - dy), mode="reflect")
        blend = sum(nn.functional.pad(w.float() * prior.denoise(canvas[..., t:t + 16, l:l + 16], sigma[i]),
                                      (l, cw - l - 16, t, ch - t - 16)) for (t, l), w in zip(spots, weights))
        outs.append(blend[..., dy:dy + 37, dx:dx + 31])
    out = torch.cat(outs)
    (grad_plain,) = torch.autograd.grad((out * g).sum(), x2)
    torch.testing.assert_close(grad_tiled, grad_plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tiled.denoise(x, sigma), out.detach(), rtol=1e-5, atol=1e-6)


def test_random_shift_runs_far_fewer_tiles_than_the_blend():
    """The point of shifting: 1024x768 with a 64-px prior takes at most 17 x 13 tiles per call without overlap,
    not 31 x 23; with the default quarter-tile overlap at most 23 x 18."""
    calls = []

    class Counting(ConvDenoiser):
        def denoise(self, x, sigma):
            calls.append(x.shape[0])
            return x

    shifted = TiledDenoiser(Counting(size=64), shift=True, overlap=0, halo=0, batch=64).for_seeds([0])
    with torch.no_grad():
        shifted.denoise(torch.zeros(1, 3, 768, 1024), 1.0)
    assert 12 * 16 <= sum(calls) <= 13 * 17 and len(TiledDenoiser(Counting(size=64)).grid(768, 1024)[0]) == 23 * 31
    calls.clear()
    with torch.no_grad():
        TiledDenoiser(Counting(size=64), shift=True, batch=64).for_seeds([0]).denoise(
            torch.zeros(1, 3, 768, 1024), 1.0)
    assert 16 * 21 <= sum(calls) <= 18 * 23


@pytest.mark.parametrize("sampler, settings", [("spgd", {}), ("ddnm", {}), ("deqir", {}),
                                                ("deqir", {"solver": "anderson"})])  # parallel: steps x images per call
def test_random_shift_restores_are_seeded_and_batch_invariant(sampler, settings):
    import spgd

    from .test_contracts import SETTINGS

    mask = (torch.rand(1, 1, 37, 31, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    op = spgd.make_operator("inpainting", mask=mask, noise_sigma=0.05)
    x = torch.rand(2, 3, 37, 31, generator=torch.Generator().manual_seed(0))
    y = spgd.simulate(x, op, seed=[5, 6])
    run = dict(sampler=sampler, progress=False, on_nan="mark", tiling="shift", **{**SETTINGS[sampler], **settings})
    both = spgd.restore(y, op, ConvDenoiser(), seed=[5, 6], **run)
    assert torch.isfinite(both).all()
    assert not torch.equal(both, spgd.restore(y, op, ConvDenoiser(), seed=[5, 6], **{**run, "tiling": "blend"}))
    for k in range(2):
        assert torch.equal(both[k:k + 1], spgd.restore(y[k:k + 1], op, ConvDenoiser(), seed=[5 + k], **run)), k
    with pytest.raises(ValueError, match="tiling must be one of blend, shift"):
        spgd.restore(y, op, ConvDenoiser(), seed=[5, 6], **{**run, "tiling": "random"})
