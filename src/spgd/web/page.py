"""The Gradio page of `spgd serve`, wired to a `WebApp`'s handlers; and `serve`, which loads the models and
serves it. Nothing here decides anything: the handlers answer, the page shows."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..methods import METHODS, load_file
from ..tasks import default_task, task_names
from .app import WebApp
from .files import MAX_UPLOAD_MB, PageError, progress_html
from .form import BUILTIN, MEASURED, SIMULATE
from .jobs import RestoreRequest

MAX_QUEUE = 32  # restores waiting at once; more are refused with Gradio's "queue is full"


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ValueError("spgd serve needs gradio: pip install 'spgd[web]'") from None
    return gradio


def _page_error(gr: Any, exc: PageError) -> Exception:
    return gr.Error(str(exc), duration=None, print_exception=False)


def build_page(app: WebApp) -> Any:
    """The Gradio Blocks of the page, wired to `app`'s handlers."""
    gr = _gradio()
    from ..demo import DEMO_INPUTS, resolve_input

    samplers = METHODS
    first = next(s for s in ["spgd", *samplers] if app.model_choices(s))  # a server of trained restorers opens on one
    tasks, models = task_names(), app.model_choices(first)
    with gr.Blocks(title="spgd: restore an image", analytics_enabled=False) as page:
        gr.Markdown("## spgd: restore an image with a diffusion prior\nUpload an image (or use the demo face), "
                    "choose the task and the sampler, press **Restore**. Each restore is an `spgd restore` run "
                    "of its own; its files are offered for download at the end.")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                image_file = gr.File(label="Image (png, jpg, ...)", type="filepath", height=110,
                                     elem_id="image_file")
                demo = gr.Button(f"Use the demo face ({DEMO_INPUTS[0]})", size="sm", elem_id="demo")
                with gr.Row():
                    task = gr.Dropdown(tasks, value=default_task(), label="Task", elem_id="task")
                    sampler = gr.Dropdown(samplers, value=first, label="Sampler", elem_id="sampler")
                note = gr.Markdown(elem_id="task_note")
                mode = gr.Radio([SIMULATE, MEASURED], value=SIMULATE, label="The image is", elem_id="mode")
                resize = gr.Checkbox(False, label="Centre-crop and resize to the prior's size (--resize); "
                                     "unticked, the image is restored at its own size", elem_id="resize")
                with gr.Accordion("Mask (--mask)", open=False, visible=False) as mask_box:
                    gr.Markdown("Paint the unknown pixels on the image, or upload a mask image (white = known "
                                "pixels; it wins over a painted one). Without one, simulating draws the task's "
                                "mask from the seed.")
                    mask_drawing = gr.ImageEditor(label="Paint the unknown pixels", type="numpy",
                                                  image_mode="RGBA", sources=(), transforms=(), layers=False,
                                                  brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed",
                                                                 default_size=12),
                                                  height=320, elem_id="mask_drawing")
                    mask_file = gr.File(label="Mask image", type="filepath", height=100, elem_id="mask_file")
                with gr.Accordion("Blur kernel (--kernel)", open=False, visible=False) as kernel_box:
                    gr.Markdown("Upload one (.npy, .pt or an image), or draw one from the task's generator with "
                                "the seed: the kernel simulating with that seed would draw.")
                    with gr.Row(equal_height=True):
                        kernel_file = gr.File(label="Kernel file", type="filepath", height=120,
                                              elem_id="kernel_file")
                        kernel_view = gr.Image(label="Kernel", interactive=False, height=120, format="png",
                                               buttons=[], elem_id="kernel_view")
                    draw_kernel = gr.Button("Draw a kernel from the seed", size="sm", elem_id="draw_kernel")
                with gr.Accordion("Reference image (--reference)", open=False, visible=False) as reference_box:
                    gr.Markdown("An image the sampler steers its result toward (its settings say how, e.g. "
                                "init_steps=20 init_objective=l2 under Other settings).")
                    reference_file = gr.File(label="Reference image", type="filepath", height=100,
                                             elem_id="reference_file")
                with gr.Accordion("Model and settings", open=True):
                    model = gr.Dropdown(models, value=next(iter(models), None), label="Model (a prior, or a "
                                        "trained restorer's weights)", elem_id="model")
                    with gr.Row():
                        steps = gr.Number(None, label="Steps (--steps)", precision=0, min_width=90,
                                          elem_id="steps")
                        lr = gr.Number(None, label="Learning rate (--lr)", min_width=90, elem_id="lr")
                        seed = gr.Number(0, label="Seed (--seed)", precision=0, min_width=90, elem_id="seed")
                    extra = gr.Textbox(label="Other settings (--set key=value ...)", placeholder="sigma_max=10 "
                                       "inner_steps=2", elem_id="extra")
            with gr.Column(scale=2, min_width=440):
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="run")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown("Ready.", elem_id="status")
                bar = gr.HTML(progress_html(0, None), elem_id="progress")
                with gr.Row(equal_height=True):
                    live = gr.Image(label="Current estimate x0", interactive=False, height=200, format="png",
                                    buttons=[], elem_id="live")
                    metrics = gr.Markdown(elem_id="metrics")
                with gr.Row():
                    before = gr.Image(label="Before", interactive=False, height=200, format="png", elem_id="before")
                    measurement = gr.Image(label="Measurement", interactive=False, height=200, type="filepath",
                                           format="png", elem_id="measurement")
                    restored = gr.Image(label="Restored", interactive=False, height=200, type="filepath",
                                        format="png", elem_id="restored")
                slider = gr.ImageSlider(label="Before / after", interactive=False, height=320, format="png",
                                        elem_id="slider")
                files = gr.File(label="Files of the run (restored PNG, measurement, grid.png, metrics.json, "
                                      "config.yaml)", file_count="multiple", interactive=False, elem_id="files")

        outputs = {"status": status, "progress": bar, "live": live, "before": before, "measurement": measurement,
                   "restored": restored, "slider": slider, "metrics": metrics, "files": files}

        def on_image(path: str | None, chosen_sampler: str, chosen: str, chosen_task: str,
                     chosen_resize: bool) -> tuple[Any, Any]:
            try:
                return app.show_input(path, chosen_sampler, chosen, chosen_task, chosen_resize)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_task(chosen_task: str, chosen_sampler: str, chosen_model: str, path: str | None, chosen_mode: str,
                    chosen_resize: bool) -> tuple[Any, ...]:
            try:
                form = app.task_form(chosen_task, chosen_sampler, chosen_model, path or None, chosen_mode,
                                     chosen_resize)
            except PageError as exc:
                raise _page_error(gr, exc) from None
            lr_info = (f"runs with {form['lr']:g} ({form['lr_from']})" if form["has_lr"]
                       else f"{chosen_sampler} has no learning rate")
            has_steps = form["steps"] is not None
            steps_info = (f"runs with {form['steps']} ({form['steps_from']})" if has_steps
                          else f"{chosen_sampler} has no steps")
            def box(shown: bool) -> Any:
                return gr.update(visible=True, open=form["required"]) if shown else gr.update(visible=False)

            return (box(form["mask"]), box(form["kernel"]), gr.update(visible=form["reference"]), form["note"],
                    gr.update(info=steps_info, interactive=has_steps, value=None),
                    gr.update(info=lr_info, interactive=form["has_lr"], value=None),
                    gr.update(value=SIMULATE) if not form["measured"] else gr.update())

        def on_task_sampler(chosen_task: str, chosen_sampler: str) -> Any:
            try:
                return gr.update(value=app.task_sampler(chosen_task, chosen_sampler))
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_sampler(chosen_sampler: str, chosen_model: str | None) -> Any:
            choices = app.model_choices(chosen_sampler)
            kept = chosen_model if chosen_model in choices else next(iter(choices), None)
            return gr.update(choices=choices, value=kept)

        def on_draw_kernel(chosen_task: str, chosen_sampler: str, chosen: str, chosen_seed: Any) -> tuple[Any, Any]:
            try:
                return app.draw_kernel(chosen_task, chosen_sampler, chosen, chosen_seed)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_kernel(path: str | None) -> Any:
            try:
                return app.show_kernel(path)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_run(image: str | None, chosen_task: str, chosen_mode: str, chosen_sampler: str, chosen_model: str,
                   chosen_steps: Any, chosen_lr: Any, chosen_seed: Any, chosen_resize: bool, chosen_extra: str,
                   chosen_mask: str | None, drawing: Any, chosen_kernel: str | None, chosen_reference: str | None,
                   request: gr.Request) -> Iterator[dict[Any, Any]]:
            req = RestoreRequest(image=image, task=chosen_task, mode=chosen_mode, sampler=chosen_sampler,
                                 model=chosen_model, steps=chosen_steps, lr=chosen_lr, seed=chosen_seed,
                                 resize=chosen_resize, extra=chosen_extra, mask_file=chosen_mask,
                                 mask_drawing=drawing, kernel_file=chosen_kernel, reference_file=chosen_reference)
            clear = {"live": None, "measurement": None, "restored": None, "slider": None, "metrics": "",
                     "files": None}
            try:
                first = True
                for update in app.restore(req, request.session_hash or ""):
                    if first:
                        update, first = {**clear, **update}, False
                    yield {outputs[k]: v for k, v in update.items()}
            except PageError as exc:
                yield {status: f"**Error**: {exc}", bar: progress_html(0, None)}
                raise _page_error(gr, exc) from None

        def on_cancel(request: gr.Request) -> tuple[str, str]:
            return app.cancel(request.session_hash or ""), progress_html(0, None)

        def on_leave(request: gr.Request) -> None:
            app.cancel(request.session_hash or "")

        for handler in (on_run, on_cancel, on_leave):  # the module's postponed annotations are strings Gradio
            handler.__annotations__ = {"request": gr.Request}  # cannot resolve: it finds gr.Request by this
        for trigger in (image_file.change, model.change, resize.change):
            trigger(on_image, [image_file, sampler, model, task, resize], [before, mask_drawing])
        demo.click(lambda: str(resolve_input(DEMO_INPUTS[0])), None, image_file)
        form_outputs = [mask_box, kernel_box, reference_box, note, steps, lr, mode]
        form_inputs = [task, sampler, model, image_file, mode, resize]
        for trigger in (task.change, model.change, image_file.change, resize.change):
            trigger(on_task, form_inputs, form_outputs)
        sampler.change(on_sampler, [sampler, model], model).then(on_task, form_inputs, form_outputs)
        task.change(on_task_sampler, [task, sampler], sampler)  # the task's own method, as without --sampler
        page.load(on_task, form_inputs, form_outputs)
        draw_kernel.click(on_draw_kernel, [task, sampler, model, seed], [kernel_file, kernel_view])
        kernel_file.change(on_kernel, kernel_file, kernel_view)
        running = run.click(on_run, [image_file, task, mode, sampler, model, steps, lr, seed, resize, extra,
                                     mask_file, mask_drawing, kernel_file, reference_file], list(outputs.values()),
                            concurrency_limit=app.workers, concurrency_id="restore", show_progress="full",
                            show_progress_on=[live])
        stop.click(on_cancel, None, [status, bar], queue=False, cancels=[running])
        page.unload(on_leave)
    return page


PAGE_CSS = """
.spgd-progress { display: flex; gap: 0.6em; align-items: center; min-height: 1.6em; }
.spgd-progress progress { flex: 1; height: 1em; accent-color: #f97316; }
#live img, #before img, #measurement img, #restored img, #kernel_view img, #slider img {
    image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""


def page_theme(gr: Any) -> Any:
    """Gradio's default look with the system's fonts (no font downloads: the page also works offline)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def serve(models: Sequence[str], host: str = "127.0.0.1", port: int = 7860, arch: str | None = None,
          device: str = "cpu", runs_dir: str | Path | None = None, workers: int = 1, offer_builtin: bool = True) -> int:
    """Load the models (priors, and trained restorers' weight files), build the page and serve it until
    interrupted; `offer_builtin`: also offer the built-in model the planner chooses for each image."""
    gr = _gradio()
    loaded = {str(name): load_file(name, arch, device=device) for name in models}
    app = WebApp(loaded, device=device, runs_dir=runs_dir, workers=workers, offer_builtin=offer_builtin)
    from ..demo import DEMO_INPUTS, resolve_input

    demo_folder = resolve_input(DEMO_INPUTS[0]).parent
    page = build_page(app)
    page.queue(default_concurrency_limit=workers, max_size=MAX_QUEUE)
    print(f"spgd serve: models {', '.join([*([BUILTIN] if offer_builtin else []), *loaded])}; runs are written to {app.runs_dir}/runs/", flush=True)
    page.launch(server_name=host, server_port=port, ssr_mode=False, show_error=True, footer_links=[],
                allowed_paths=[str(app.runs_dir), str(demo_folder)], max_file_size=f"{MAX_UPLOAD_MB}mb",
                theme=page_theme(gr), css=PAGE_CSS)
    return 0
