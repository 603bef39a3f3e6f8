"""The contracts, checked for every registered operator and every sampler: a new one is tested here.

Operators: the adjoint is the adjoint (dot products, float64) and equals autograd's vector-Jacobian
product; A(A_pinv(y)) = y on the range and `null` is a projection that removes A_pinv's range; shapes
map both ways; a batch of three equals three runs of one; `params()` rebuilds the operator exactly;
`supports()` tells the truth; an SVD is one (U, V orthogonal, A = U diag(s) V^T, A^+ its truncation). Samplers: each runs with a prior whose ladder is not the linear DDPM
one, and the DDPM-chain samplers walk exactly that prior's ladder.
"""
from __future__ import annotations

import pytest
import torch

from spgd.operators import _ALIASES as OPERATOR_ALIASES
from spgd.operators import make_operator, operator_names
from spgd.operators.blur import transfer_function
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS
from spgd.schedule import (
    cosine_alpha_bars,
    quadratic_indices,
    respaced_indices,
    sigmas_from_alpha_bars,
    strided_indices,
)
from spgd.seeding import make_generators

pytestmark = pytest.mark.usefixtures("one_thread")

# one small example per registered operator: (parameters, image shape)
EXAMPLES = {
    "super_resolution": (dict(scale=2, noise_sigma=0.1), (3, 8, 12)),
    "inpainting": (dict(kind="random", fraction=0.5, noise_sigma=0.1), (3, 8, 8)),
    "blur": (dict(kernel=torch.tensor([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]]), noise_sigma=0.1),
             (3, 10, 10)),
    "gaussian_blur": (dict(kernel_size=5, std=1.0, noise_sigma=0.1), (3, 10, 10)),
    "motion_blur": (dict(kernel_size=5, intensity=0.5, noise_sigma=0.1), (3, 10, 10)),
    "blind_deblur": (dict(kernel_size=5, noise_sigma=0.1), (3, 10, 10)),
    "phase_retrieval": (dict(noise_sigma=0.1), (1, 8, 8)),
    "hdr": (dict(noise_sigma=0.1), (3, 8, 8)),
    "denoising": (dict(sigma=12.75), (3, 8, 8)),
    "jpeg": (dict(quality=50, subsampling="4:4:4"), (3, 16, 16)),  # 4:2:0: tests/test_jpeg.py
    "super_resolution_jpeg": (dict(scale=2, quality=50, subsampling="4:4:4"), (3, 32, 32)),
    "real_sr": (dict(scale=2, noise_sigma=0.1), (3, 16, 16)),
    "nonlinear_blur": (dict(noise_sigma=0.1), (3, 128, 128)),
}
REGISTERED = sorted(set(operator_names()) - set(OPERATOR_ALIASES))
REFITS = {"blind_deblur"}  # operators that estimate a parameter from an image estimate (blind methods)
HAS_SVD = {"super_resolution", "inpainting", "gaussian_blur", "denoising", "real_sr"}  # the examples' SVDs (blur's kernel is not separable)


def build(name: str, request) -> tuple:
    params, shape = EXAMPLES[name]
    if name == "nonlinear_blur":
        params = {**params, "weights": request.getfixturevalue("kernel_wizard_weights")}
    return make_operator(name, **params), shape


def images(shape, batch=3, seed=0, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def measured(name, request, batch=3, seed=0):
    """An operator with its random parameters drawn for a batch, the images and their measurement."""
    op, shape = build(name, request)
    x = images(shape, batch, seed)
    y = op.measure(x, make_generators(list(range(seed, seed + batch)), batch, "measure"))
    return op, x, y


def test_every_registered_operator_has_an_example():
    assert sorted(EXAMPLES) == REGISTERED


@pytest.mark.parametrize("name", REGISTERED)
def test_capabilities_are_what_the_operator_answers(name, request):
    op, x, y = measured(name, request)
    assert op.supports("adjoint") == op.linear
    assert op.supports("svd") == (name in HAS_SVD)
    assert op.supports("refit") == (name in REFITS)
    if op.supports("svd"):
        assert op.svd(tuple(x.shape)).s.shape[-2:] == x.shape[-2:]
    else:
        with pytest.raises(NotImplementedError, match="has no singular value decomposition"):
            op.svd(tuple(x.shape))
    if op.supports("pinv"):
        assert op.A_pinv(y).shape == x.shape and op.null(x).shape == x.shape
    else:
        with pytest.raises(NotImplementedError, match="no pseudo-inverse"):
            op.A_pinv(y)
    with pytest.raises(ValueError, match="unknown operator capability 'magic'"):
        op.supports("magic")


@pytest.mark.parametrize("name", REGISTERED)
def test_shapes_map_both_ways_and_previews_are_images(name, request):
    op, x, y = measured(name, request)
    assert op.measurement_shape(tuple(x.shape)) == tuple(y.shape)
    assert op.input_shape(y) == tuple(x.shape)
    preview = op.preview(y)
    assert preview.shape[0] == 3 and preview.min() >= 0 and preview.max() <= 1


@pytest.mark.parametrize("name", [n for n in REGISTERED if EXAMPLES[n][1][1] < 128])
def test_linear_operators_have_exact_adjoints_equal_to_autograd(name, request):
    op, x, y = measured(name, request)
    if not op.linear:
        pytest.skip(f"{name} is not linear")
    op = op.double()
    x, v = images(x.shape[1:], dtype=torch.float64), torch.randn(y.shape, dtype=torch.float64,
                                                                   generator=torch.Generator().manual_seed(5))
    lhs, rhs = (op.A(x) * v).sum(), (x * op.A_adjoint(v)).sum()
    assert abs(float(lhs - rhs)) < 1e-10 * max(1.0, abs(float(lhs)))
    x_in = x.clone().requires_grad_(True)
    vjp, = torch.autograd.grad((op.A(x_in) * v).sum(), x_in)
    torch.testing.assert_close(vjp, op.A_adjoint(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in REGISTERED if EXAMPLES[n][1][1] < 128])
def test_pseudo_inverse_inverts_on_the_range_and_null_is_its_complement(name, request):
    op, x, _ = measured(name, request)
    if not op.supports("pinv"):
        pytest.skip(f"{name} has no pseudo-inverse")
    op = op.double()
    x = images(x.shape[1:], dtype=torch.float64)
    if not op.linear:  # a quantiser (JPEG 4:4:4): a decoded image codes back to itself
        y = op.A(x)
        torch.testing.assert_close(op.A(op.A_pinv(y)), y, rtol=0, atol=1e-10)
        return
    torch.testing.assert_close(op.null(op.null(x)), op.null(x), rtol=0, atol=1e-10)
    if op.name.endswith("blur") and not op.supports("svd"):  # the pseudo-inverse of the circular blur (blur.py)
        y = torch.fft.ifft2(torch.fft.fft2(x) * transfer_function(op.kernel, *x.shape[-2:])).real
        torch.testing.assert_close(op.A_pinv(y), x - op.null(x), rtol=0, atol=1e-8)
    else:
        y = op.A(x)
        if not op.name.endswith("blur"):  # a blur's pseudo-inverse drops its singular values below pinv_cutoff
            torch.testing.assert_close(op.A(op.A_pinv(y)), y, rtol=0, atol=1e-10)
        # a separable blur's SVD is that of its float32 kernel's rank-one part (~1e-8 relative off the kernel),
        # divided by singular values down to the 3e-2 cutoff
        tolerance = 1e-6 if op.name.endswith("blur") else 1e-10
        torch.testing.assert_close(op.A_pinv(y), x - op.null(x), rtol=0, atol=tolerance)
    assert op.null(op.A_pinv(y)).abs().max() < 1e-10


@pytest.mark.parametrize("name", REGISTERED)
def test_batch_of_three_equals_three_of_one_and_params_rebuild_it(name, request):
    op, x, y = measured(name, request, seed=10)
    rebuilt = make_operator(**op.params())
    torch.testing.assert_close(rebuilt.A(x), op.A(x), rtol=0, atol=0)
    for i in range(3):
        single, _ = build(name, request)
        y_i = single.measure(x[i:i + 1], make_generators([10 + i], 1, "measure"))
        torch.testing.assert_close(y_i[0], y[i], rtol=1e-4, atol=1e-4)


# every kind of SVD: the registered examples that have one, and the variants that give one
SVD_EXAMPLES = {
    **{name: EXAMPLES[name] for name in sorted(HAS_SVD)},
    "super_resolution (average)": (dict(name="super_resolution", scale=2, filter="average", noise_sigma=0.1),
                                   (3, 8, 12)),
    "super_resolution (x3, odd width)": (dict(name="super_resolution", scale=3, noise_sigma=0.1), (3, 9, 6)),
    "blur (circular)": (dict(name="blur", boundary="circular", **EXAMPLES["blur"][0]), (3, 10, 9)),
    "motion_blur (circular, per image)": (dict(name="motion_blur", boundary="circular", **EXAMPLES["motion_blur"][0]),
                                          (3, 9, 10)),
}


def basis(shape) -> torch.Tensor:
    """Every unit image of `shape` (float64), as a batch."""
    n = int(torch.tensor(shape).prod())
    return torch.eye(n, dtype=torch.float64).reshape(n, *shape)


@pytest.mark.parametrize("label", sorted(SVD_EXAMPLES))
def test_svd_is_a_singular_value_decomposition_of_the_operator(label):
    params, shape = SVD_EXAMPLES[label]
    params = {"name": label, **params} if "name" not in params else params
    op = make_operator(**params)
    x = images(shape, dtype=torch.float64)
    op.measure(x.float(), make_generators([0, 1, 2], 3, "measure"))
    op = op.double()
    svd = op.svd(tuple(x.shape), dtype=torch.float64)
    y, s = op.A(x), svd.s
    assert (s >= 0).all() and s.shape[-2:] == x.shape[-2:]
    # A = U diag(s) V^T and A^T = V diag(s) U^T on random images (a separable Gaussian kernel is rank one
    # to ~1e-8 of its float32 rounding; every other SVD is exact to rounding)
    torch.testing.assert_close(svd.U(s * svd.V_adjoint(x)), y, rtol=0, atol=1e-7)
    torch.testing.assert_close(svd.V(s * svd.U_adjoint(y)), op.A_adjoint(y), rtol=0, atol=1e-7)
    # V orthogonal: V^T V = V V^T = I, as dense matrices over the unit images of one image
    e = basis(shape)
    v_t = svd.V_adjoint(e.unsqueeze(1).expand(-1, 3, *shape).contiguous())[:, 0].reshape(len(e), -1)
    torch.testing.assert_close(v_t @ v_t.T, torch.eye(len(e), dtype=torch.float64), rtol=0, atol=1e-10)
    # U orthogonal on the measurement space: U^T embeds it isometrically, U is its inverse
    m = basis(y.shape[1:])
    u_t = svd.U_adjoint(m.unsqueeze(1).expand(-1, 3, *y.shape[1:]).contiguous())[:, 0].reshape(len(m), -1)
    torch.testing.assert_close(u_t @ u_t.T, torch.eye(len(m), dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(svd.U(svd.U_adjoint(y)), y, rtol=0, atol=1e-10)
    # the pseudo-inverse is the SVD's, dropping singular values at or below the operator's pinv_cutoff
    kept = s > getattr(op, "pinv_cutoff", 0.0)
    expected = svd.V(torch.where(kept, svd.U_adjoint(y) / torch.where(kept, s, 1.0), 0.0))
    torch.testing.assert_close(op.A_pinv(y), expected, rtol=0, atol=1e-8)
    torch.testing.assert_close(op.null(x), svd.V(torch.where(kept, 0.0, svd.V_adjoint(x))), rtol=0, atol=1e-8)


def counting(prior):
    """`prior`, recording every sigma its denoiser is asked for."""
    asked: list[float] = []
    original = prior.denoise

    def denoise(x, sigma):
        asked.append(float(torch.as_tensor(sigma).reshape(-1)[0]))
        return original(x, sigma)

    prior.denoise = denoise
    return prior, asked


COSINE = sigmas_from_alpha_bars(cosine_alpha_bars(200))  # 200 levels, a cosine schedule: not the linear 1000
SETTINGS = {"dps": dict(steps=8), "reddiff": dict(steps=8), "deqir": dict(steps=8, solver="sequential"),
            "spgd": dict(steps=4, inner_steps=1, lr=0.5), "daps": dict(steps=3, ode_steps=2, langevin_steps=2, lr=1e-3),
            "diffpir": dict(steps=8), "ddnm": dict(steps=8), "ddnm_plus": dict(steps=8), "ddrm": dict(steps=8),
            "pigdm": dict(steps=8), "fast_em": dict(steps=8, refit_every=0),
            "pnpdm": dict(steps=3, rho=1.0, rho_decay=0.5, rho_min=0.1, diffusion_steps=4, burn_in=1, samples=2)}
# the DDPM chains: how each picks its 8 levels from the prior's ladder (DiffPIR skips its last level's call,
# whose output the released code discards)
CHAINS = {"dps": (respaced_indices, 8), "reddiff": (strided_indices, 8), "deqir": (strided_indices, 8),
          "ddnm": (strided_indices, 8), "ddnm_plus": (strided_indices, 8), "ddrm": (strided_indices, 8),
          "pigdm": (strided_indices, 8), "diffpir": (quadratic_indices, 7), "fast_em": (quadratic_indices, 7)}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_on_a_prior_with_another_ladder(name):
    assert sorted(SETTINGS) == sorted(SAMPLERS)
    prior, asked = counting(GaussianPrior(8, channels=3, ladder=COSINE))
    op = make_operator("super_resolution", scale=2, noise_sigma=0.05)
    x = prior.sample(make_generators([1, 2], 2, "truth"))
    y = op.measure(x, make_generators([1, 2], 2, "measure"))
    out = SAMPLERS[name](prior, op, y, seed=[1, 2], progress=False, **SETTINGS[name])
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert max(asked) <= prior.sigma_max * (1 + 1e-6)
    if name in CHAINS:  # the DDPM chains walk the prior's own ladder, top first
        pick, calls = CHAINS[name]
        chain = [float(COSINE[k]) for k in pick(len(COSINE), 8)[::-1]]
        assert asked == pytest.approx(chain[:calls], rel=1e-6)


ODD_SIZES = [(37, 31), (375, 500)]  # (H, W)


@pytest.mark.parametrize("size", ODD_SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", [n for n in REGISTERED if n != "nonlinear_blur"])
def test_every_operator_at_odd_sizes_maps_shapes_adjoints_and_inverts_or_says_why(name, size, request):
    """37x31 and 500x375: the shapes map both ways, the adjoint is exact, A^+ inverts on the range and an SVD is
    one; SR needs a multiple of its scale and says so in one line. (nonlinear_blur: multiples of 128 only.)"""
    params, (channels, _, _) = EXAMPLES[name]
    op = make_operator(name, **params)
    shape = (2, channels, *size)
    if name in ("super_resolution", "super_resolution_jpeg", "real_sr"):  # every SR: a multiple of the scale
        with pytest.raises(ValueError, match=r"^super_resolution: image size 31x37 \(WxH\) is not divisible by the "
                                             r"scale 2|^super_resolution: image size 500x375 \(WxH\) is not divisible"):
            op.measurement_shape(shape[1:])
        shape = (2, channels, size[0] // 2 * 2, size[1] // 2 * 2)  # the rule: crop to a multiple of the scale
    x = images(shape[1:], batch=2, dtype=torch.float64)
    y = op.measure(x.float(), make_generators([0, 1], 2, "measure")).double()
    op = op.double()
    assert op.measurement_shape(shape[1:]) == tuple(y.shape[1:]) and op.input_shape(y) == shape
    if not op.linear:
        return
    v = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    lhs, rhs = (op.A(x) * v).sum(), (x * op.A_adjoint(v)).sum()
    assert abs(float(lhs - rhs)) < 1e-9 * max(1.0, abs(float(lhs)))
    if op.supports("pinv") and not op.name.endswith("blur"):  # a blur's A^+ truncates (tested above)
        torch.testing.assert_close(op.A(op.A_pinv(op.A(x))), op.A(x), rtol=0, atol=1e-9)
    if op.supports("svd"):
        svd = op.svd(shape, dtype=torch.float64)
        torch.testing.assert_close(svd.U(svd.s * svd.V_adjoint(x)), op.A(x), rtol=0, atol=1e-8)
