"""DiffIR (Xia et al., ICCV 2023) under the samplers' signature: a trained restorer, not a posterior sampler.

The "prior" of a DiffIR run is a DiffIR weight file (`spgd.diffir`: the built-in one for the task and the
image, or `--model FILE`); this adapter calls it through `restore_measurement`, so the run layer, `mean_of`,
the CLI, bench and the page treat it like any sampler. One restore costs CPEN_S2 once, the IPR MLP 4 times
and one DIRformer pass; the seed draws the IPR chain's start z_T ~ N(0, I) per image (the reverse steps add
no noise, as released). `x_start`, when given, is that z_T (N x IPR length).

What spgd does differently from the released code (Zj-BinXia/DiffIR): networks sized for a CPU (see
`spgd.diffir.network.DiffIRConfig`), trained here on pairs this project's operators synthesise, with L1
losses only (no GAN/perceptual/LaMa terms), a cosine learning rate, and for inpainting L1 on every pixel.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .common import DivergenceError, Trace


def diffir(prior: Any, operator: Any, y: Tensor, x_start: Tensor | None = None, seed: int | Sequence[int] = 0, *,
           on_nan: str = "raise", trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restored images in [-1, 1] by the DiffIR model `prior` from measurements y; a non-finite result
    raises `DivergenceError` (on_nan="raise") or is reported in `trace.failed` (on_nan="mark")."""
    restore = getattr(prior, "restore_measurement", None)
    if restore is None:
        raise ValueError("the diffir sampler restores with DiffIR weights (the built-in ones for the task, or "
                         "--model FILE of `spgd export-diffir`), not with a diffusion prior")
    x = restore(operator, y, seed=seed, ipr_start=x_start)
    bad = [k for k in range(x.shape[0]) if not bool(torch.isfinite(x[k]).all())]
    if bad and on_nan == "raise":
        raise DivergenceError("diffir", 0, bad, "the network's output is not finite", "check the measurement")
    for k in bad if trace is not None else ():
        trace.failed[k], trace.reasons[k] = 0, "the DiffIR network's output is not finite"
    return x


diffir.model_kind = "diffir"  # what `spgd.models.load_model` loads for this sampler
