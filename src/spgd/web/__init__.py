"""`spgd serve`: a web page (Gradio) to restore one image at a time, with the planner and run layer of
`spgd restore`.

Every restore is a `spgd restore` run: the form becomes one `spgd.plan.Request`, planned like the command
line's, and `spgd.restore_job.run_restore` writes it into a fresh folder of its own (the restored PNG, the
measurement, grid.png, metrics.json, config.yaml), so the page's results are the command line's, byte for
byte. The page only adds what a person at a browser needs: uploads checked with the command line's one-line
messages, the settings the plan resolves for the uploaded image, a progress bar with the data-fit loss, the
current estimate x0 every few steps, a cancel button that stops any restorer at its next step (the Restorer's
stop callback), a queue that runs one restore per worker at a time, and downloads.

The package's rooms: `files` (uploads and pictures), `form` (model choices and the form, pure functions),
`jobs` (a restore on a worker thread, progress, cancel, results), `app` (`WebApp`, the handlers), `page`
(the Gradio wiring and `serve`).
"""
from .app import WebApp
from .files import PageError, check_upload, mask_from_drawing
from .form import BUILTIN, MEASURED, SIMULATE
from .jobs import ProgressTrace, RestoreRequest
from .page import build_page, serve

__all__ = ["BUILTIN", "MEASURED", "SIMULATE", "PageError", "ProgressTrace", "RestoreRequest", "WebApp", "build_page",
           "check_upload", "mask_from_drawing", "serve"]
