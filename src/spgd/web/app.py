"""`WebApp`: the page's handlers as plain Python (the unit tests call them directly), holding what lives as
long as the server: the offered models, the built-in ones loaded so far, the run folders and the runner."""
from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from .. import io
from ..run import make_spec
from ..seeding import make_generators
from ..tasks import preset_methods
from .files import USER_ERRORS, PageError, check_task, check_upload, kernel_image, tidy, to_array, upscale, view, whole
from .form import BUILTIN, MEASURED, form_spec, model_choices, request_model, task_form
from .jobs import RestoreRequest, Runner, prepare

MASK_CANVAS = 768  # the longest side of the mask editor's canvas for a large image


class WebApp:
    """`models`: the models a visitor may choose ({label: a loaded prior or trained restorer}); `offer_builtin`:
    also offer the built-in model the planner chooses for each image (`BUILTIN`); `runs_dir`: where run
    folders are made (a fresh temporary folder by default); `workers`: restores that run at once."""

    def __init__(self, models: Mapping[str, Any], device: str = "cpu", runs_dir: str | Path | None = None,
                 workers: int = 1, offer_builtin: bool = False) -> None:
        if not models and not offer_builtin:
            raise ValueError("no model to offer: pass --model FILE")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.models = dict(models)
        self.cache: dict[str, Any] = dict(models)  # + the built-in models loaded so far, by name
        self.offer_builtin, self.device = offer_builtin, device
        self.runs_dir = Path(runs_dir) if runs_dir else Path(tempfile.mkdtemp(prefix="spgd-serve-"))
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.runner = Runner(self.runs_dir, workers)
        self.workers = workers

    def model_choices(self, sampler: str) -> list[str]:
        return model_choices(self.models, sampler, self.offer_builtin)

    def task_sampler(self, task: str, current: str) -> str:
        """The method the page turns to for `task`: the first its preset names that a model here serves (the
        command line's default without --sampler), else `current`."""
        return next((name for name in preset_methods(check_task(task)) if self.model_choices(name)), current)

    def image_size(self, sampler: str, model: str | None, task: str) -> tuple[int, int]:
        """(H, W) of the images the chosen model is made for (256 for one of any size); for `BUILTIN`, those
        of an image resized for it (`--resize`)."""
        try:
            spec = form_spec(self.models, self.cache, check_task(task), sampler, model, self.offer_builtin,
                             device=self.device)
        except USER_ERRORS as exc:
            raise PageError(str(exc)) from None
        side = spec.model.image_size or 256
        return side, side

    def show_input(self, path: str | None, sampler: str, model: str | None, task: str, resize: bool = False
                   ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """The uploaded image as the page shows it, and the mask editor's canvas: the image itself (a mask is
        of its size), or with `resize` the image at the model's size (centre-cropped); small ones enlarged so
        that a mask is easy to paint, large ones shown at most MASK_CANVAS pixels wide or high (the painted
        mask is resampled to the image). Bad files: a PageError."""
        if not path:
            return None, None
        check_upload(path)
        if resize:
            height, width = self.image_size(sampler, model, task)
            fitted = to_array(io.load_image(path, (height, width), resize=True))
        else:
            fitted = view(path, MASK_CANVAS)
            height, width = fitted.shape[:2]
        factor = max(1, 256 // max(height, width))
        canvas = {"background": upscale(fitted, (height * factor, width * factor)), "layers": [], "composite": None}
        return view(path), canvas

    def task_form(self, task: str, sampler: str, model: str | None = None, image: str | None = None,
                  mode: str = "", resize: bool = False) -> dict[str, Any]:
        """The form for these choices (`spgd.web.form.task_form`); `model` None: the first offered."""
        label = model if model is not None else next(iter(self.model_choices(sampler)), None)
        return task_form(self.models, self.cache, task, sampler, label, self.offer_builtin, image,
                         mode == MEASURED, resize, self.device)

    def draw_kernel(self, task: str, sampler: str, model: str, seed: Any) -> tuple[str, np.ndarray]:
        """Draw the task operator's kernel from the seed, as `--simulate` would draw it for image 0 with
        that seed; returns the kernel saved as .npy (for the kernel upload) and its picture."""
        seed = whole(seed, "Seed") or 0
        height, width = self.image_size(sampler, model, task)
        try:
            operator = make_spec(None, task, sampler, device=self.device).make_operator()
        except USER_ERRORS as exc:
            raise PageError(str(exc)) from None
        if "kernel" not in operator.file_parameters:
            raise PageError(f"task {task}: its operator takes no blur kernel")
        operator.draw(torch.zeros(1, 3, height, width, device=self.device), make_generators(seed, 1, "measure"))
        kernel = operator.params().get("kernel")
        if kernel is None:
            raise PageError(f"task {task}: its operator draws no kernel")
        kernel = kernel.detach().float().cpu().reshape(-1, *kernel.shape[-2:])[0]
        path = self.runs_dir / "drawn" / uuid.uuid4().hex[:12] / f"{task}_kernel_seed{seed}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, kernel.numpy())
        return str(path), kernel_image(kernel)

    def show_kernel(self, path: str | None) -> np.ndarray | None:
        """The picture of an uploaded kernel file; a file that is no kernel: a PageError."""
        if not path:
            return None
        check_upload(path, "kernel")
        try:
            return kernel_image(io.load_kernel(Path(path)))
        except USER_ERRORS as exc:
            raise PageError(tidy(str(exc), [Path(path).parent])) from None

    def restore(self, req: RestoreRequest, session: str = "",
                progress: Callable[..., Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run one restore (`spgd.web.jobs.Runner.restore`)."""
        model = request_model(self.models, req.sampler, req.model, self.offer_builtin)
        yield from self.runner.restore(lambda run: prepare(req, run, model, self.cache, self.device), session,
                                       progress)

    def cancel(self, session: str = "") -> str:
        return self.runner.cancel(session)

    def running(self) -> int:
        return self.runner.running()


__all__ = ["BUILTIN", "WebApp"]
