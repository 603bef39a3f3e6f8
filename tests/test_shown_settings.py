"""What a user is shown is what runs: `spgd tasks TASK` and the page show the settings `make_spec` resolves
for the chosen prior (the built-in one by default), layer by layer, and a restore runs with exactly those."""
from __future__ import annotations

import pytest
import yaml

import spgd
from spgd.cli import main
from spgd.run import make_spec, shown_value
from spgd.tasks import LAYERS, default_task, load_task, preset_settings
from spgd.samplers import sampler_settings

from .conftest import write_face_like


def table(text: str) -> dict[str, dict[str, str]]:
    """`spgd tasks TASK` output -> {setting: {column: cell}} (columns are two or more spaces apart)."""
    import re

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("setting "))
    head = re.split(r"\s{2,}", lines[start].strip())
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def test_tasks_shows_the_built_in_priors_settings_layer_by_layer(capsys):
    assert main(["tasks", "super_resolution"]) == 0
    rows = table(capsys.readouterr().out)
    assert [rows[key]["runs with"] for key in ("steps", "lr", "mean_of", "sigma_max", "sigma_min")] == \
        ["25", "15", "4", "10", "0.6"]
    assert rows["steps"]["sampler default"] == "200" and rows["lr"]["task preset"] == "7"
    assert rows["lr"]["prior's recommendation"] == "15" and rows["steps"]["from"] == "prior's recommendation"
    assert rows["beta"]["runs with"] == "0.9" and rows["beta"]["task preset"] == "-"
    assert rows["beta"]["from"] == "sampler default"
    assert main(["tasks", "super_resolution", "--lr", "3", "--set", "mean_of=2"]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["lr"]["passed by you"] == "3" and rows["lr"]["runs with"] == "3" and rows["lr"]["from"] == "passed by you"
    assert rows["mean_of"]["runs with"] == "2" and rows["steps"]["runs with"] == "25"


def test_what_tasks_shows_is_what_a_restore_runs_with(tmp_path, capsys, one_thread):
    flags = ["--steps", "2", "--inner-steps", "1", "--set", "sigma_max=5.0", "mean_of=1"]
    assert main(["tasks", "inpainting_random", *flags]) == 0
    rows = table(capsys.readouterr().out)
    face = write_face_like(tmp_path / "face.png")
    assert main(["restore", "-t", "inpainting_random", "--simulate", "-i", str(face), "-o", str(tmp_path / "out"),
                 "--threads", "1", *flags]) == 0
    ran = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())["sampler_settings"]
    assert {key: row["runs with"] for key, row in rows.items()} == \
        {key: shown_value(value) for key, value in ran.items()}


def test_make_spec_records_where_each_setting_comes_from():
    prior = spgd.load_prior()
    spec = make_spec(prior, "super_resolution", "spgd", settings={"lr": 3.0})
    assert list(spec.layers) == list(LAYERS)
    assert spec.layers[LAYERS[0]] == sampler_settings("spgd")
    assert spec.layers[LAYERS[1]] == preset_settings(load_task("super_resolution"), "spgd")
    assert spec.layers[LAYERS[2]] == prior.recommended("super_resolution", "spgd")
    assert spec.layers[LAYERS[3]] == {"lr": 3.0}
    rows = spec.setting_rows()
    assert list(rows) == list(spec.settings)
    assert rows["lr"] == {LAYERS[0]: 1.0, LAYERS[1]: 7.0, LAYERS[2]: 15.0, LAYERS[3]: 3.0, "value": 3.0,
                          "from": LAYERS[3]}
    assert rows["steps"]["from"] == LAYERS[2] and rows["beta"] == {LAYERS[0]: 0.9, "value": 0.9, "from": LAYERS[0]}


def test_the_page_shows_the_settings_of_the_chosen_prior_and_starts_with_the_readmes_task(tmp_path):
    web = pytest.importorskip("spgd.web")
    prior = spgd.load_prior()
    app = web.WebApp({"builtin:faces64": prior}, runs_dir=tmp_path)
    assert default_task() == "super_resolution"  # the README's first command
    form = app.task_form(default_task(), "spgd", "builtin:faces64")
    assert (form["steps"], form["lr"]) == (25, 15.0) and form["steps_from"] == "prior's recommendation"
    assert "mean_of 4" in form["note"] and "steps 25" in form["note"]
    deblur = app.task_form("gaussian_blur", "spgd", "builtin:faces64")
    spec = make_spec(prior, "gaussian_blur", "spgd")
    assert (deblur["steps"], deblur["lr"]) == (spec.settings["steps"], spec.settings["lr"]) == (100, 1.5)
    pytest.importorskip("gradio", reason="the page needs gradio: pip install 'spgd[web]'")
    page = web.build_page(app)
    [task] = [block for block in page.blocks.values() if getattr(block, "elem_id", None) == "task"]
    assert task.value == "super_resolution"
