"""`spgd serve` end to end in a real browser: Chromium (Debian's package) driven by Playwright.

The server runs as `spgd serve` on a free loopback port with the built-in prior (no ../shared needed:
these tests run on a bare clone); a face is uploaded and restored in a few steps, one run each
(mean_of=1), the result is checked against `spgd restore` with the same settings (the same PNG bytes),
and a broken upload shows the command line's message while the server goes on.

Skips, naming what is missing, without gradio, playwright or a Chromium binary (`apt-get install
chromium`; set SPGD_CHROMIUM to use another binary). SPGD_WEB_SCREENSHOT=docs/web.png also writes the
screenshot of the restore test there (SPGD_WEB_STEPS=N restores with N steps for it).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the web page needs gradio: pip install 'spgd[web]'")
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="playwright is not installed (pip install playwright)")

from spgd.cli import main  # noqa: E402

from .conftest import write_face_like  # noqa: E402

CHROMIUM = os.environ.get("SPGD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") \
    or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STEPS = int(os.environ.get("SPGD_WEB_STEPS", "3"))
SETTINGS = "inner_steps=1 sigma_max=5 mean_of=1" if STEPS <= 5 else "sigma_max=10 mean_of=1"
TIMEOUT_MS = 120_000 + 5_000 * STEPS  # a busy single core: chromium, the server and pytest share it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`spgd serve` with the built-in prior (its default) on a free loopback port; yields (url, process)."""
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(folder / "gradio"),
           "OMP_NUM_THREADS": "1"}
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "spgd", "serve", "--port", str(port), "--threads", "1",
                                "--runs-dir", str(folder / "runs")],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"spgd serve did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url, process, folder
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium binary at {CHROMIUM} (apt-get install chromium, or set SPGD_CHROMIUM)")
    with playwright_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except playwright_api.Error as exc:
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh visitor (browser context) on the page; fails the test if the page asked any other host."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    elsewhere = []
    page.on("request", lambda r: None if r.url.startswith((server[0], "data:", "blob:")) else elsewhere.append(r.url))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server[0])
    page.wait_for_selector("#run")
    yield page
    context.close()
    assert not elsewhere, f"the page reached out of the server: {elsewhere[:5]}"


def choose(page, dropdown: str, option: str) -> None:
    page.click(f"{dropdown} input")
    page.get_by_role("option", name=option, exact=True).click()


def test_restore_a_face_in_the_browser_equals_the_cli(page, server, tmp_path, one_thread):
    from spgd.demo import resolve_input

    face = tmp_path / "face.png"
    shutil.copyfile(resolve_input("demo:astronaut"), face)  # the demo face, 120x120: restored at its own size
    page.set_input_files("#image_file input[type=file]", str(face))
    page.wait_for_selector("#before img")
    choose(page, "#task", "super_resolution")
    page.fill("#steps input", str(STEPS))
    page.fill("#seed input", "1")
    page.fill("#extra textarea", SETTINGS)
    page.click("#run")
    page.wait_for_selector("#restored img")
    page.wait_for_selector("#files a")
    status, metrics = page.inner_text("#status"), page.inner_text("#metrics")
    assert status.startswith("Done") and "PSNR" in metrics and "SSIM" in metrics
    assert f"step {STEPS}/{STEPS}" in page.inner_text("#progress")
    restored = page.request.get(page.get_attribute("#restored img", "src")).body()
    (tmp_path / "page.png").write_bytes(restored)
    assert Image.open(tmp_path / "page.png").size == (120, 120)  # the natural prior chosen for it, on tiles
    hrefs = [page.locator("#files a").nth(i).get_attribute("href") for i in range(page.locator("#files a").count())]
    links = {href.rsplit("/", 1)[-1]: href for href in hrefs if href}
    assert set(links) == {"face.png", "face_measurement.png", "grid.png", "metrics.json", "config.yaml"}
    assert page.request.get(links["face.png"]).body() == restored  # the download is the shown image
    page.screenshot(path=str(tmp_path / "screenshot.png"), full_page=True)
    assert Image.open(tmp_path / "screenshot.png").size[0] == 1280
    if os.environ.get("SPGD_WEB_SCREENSHOT"):
        keep_small_screenshot(tmp_path / "screenshot.png", Path(os.environ["SPGD_WEB_SCREENSHOT"]))
    cli = tmp_path / "cli"
    assert main(["restore", "-i", str(face), "-t", "super_resolution", "--simulate",  # the prior chosen by the image
                 "--steps", str(STEPS), "--set", *SETTINGS.split(), "--seed", "1", "--threads", "1",
                 "-o", str(cli)]) == 0
    assert restored == (cli / "face.png").read_bytes()
    [run] = (server[2] / "runs" / "runs").glob(f"*/inputs/{face.name}")
    assert (run.parent.parent / "metrics.json").read_text() == (cli / "metrics.json").read_text()
    assert page.request.get(links["metrics.json"]).text() == (cli / "metrics.json").read_text()


def keep_small_screenshot(source: Path, target: Path) -> None:
    """The page's screenshot for the docs: 1000 pixels wide, 128 colours (well under 150 KB)."""
    image = Image.open(source).convert("RGB")
    image = image.resize((1000, round(image.height * 1000 / image.width)), Image.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def test_a_broken_upload_shows_the_error_and_the_server_goes_on(page, server, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    page.set_input_files("#image_file input[type=file]", str(broken))
    toast = page.locator(".toast-body", has_text="broken.png: not a readable image")
    toast.wait_for()
    page.click("#run")
    page.wait_for_selector("#status:has-text('broken.png: not a readable image')")
    assert server[1].poll() is None
    page.click("#image_file button[aria-label='Clear']")
    page.set_input_files("#image_file input[type=file]", str(write_face_like(tmp_path / "good.png", seed=3)))
    page.wait_for_selector("#before img")
    page.fill("#steps input", "2")
    page.fill("#extra textarea", "inner_steps=1 sigma_max=5 mean_of=1")
    page.click("#run")
    page.wait_for_selector("#restored img")
    assert page.inner_text("#status").startswith("Done")
    assert not list((server[2] / "runs" / "runs").glob("*/inputs/broken.png"))  # the failed run left nothing


def test_visitors_queue_and_cancel_stops_the_sampler(page, browser, server):
    """A second visitor waits in the queue, seeing their place, while the first restores; the first's
    Cancel stops the sampler (its run folder goes) and the second's restore runs and finishes."""
    runs = server[2] / "runs" / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    page.click("#demo")
    page.wait_for_selector("#before img")
    page.fill("#steps input", "500")
    page.fill("#extra textarea", "inner_steps=1 sigma_max=5 mean_of=1")
    page.click("#run")
    page.wait_for_selector("#progress:has-text('step ')")
    [run] = set(runs.iterdir()) - before
    other = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(server[0])
    other.click("#demo")
    other.wait_for_selector("#before img")
    other.fill("#steps input", "2")
    other.fill("#extra textarea", "inner_steps=1 sigma_max=5 mean_of=1")
    other.click("#run")
    other.wait_for_selector("#live:has-text('queue: 1/1')")  # their place in the queue
    assert "step " in page.inner_text("#progress")  # the first visitor's run is untouched
    page.click("#cancel")
    page.wait_for_selector("#status:has-text('Cancelled')")
    deadline = time.monotonic() + 30
    while run.exists() and time.monotonic() < deadline:  # the worker stops at its next step and cleans up
        time.sleep(0.2)
    assert not run.exists()
    other.wait_for_selector("#restored img")
    assert other.inner_text("#status").startswith("Done") and page.locator("#restored img").count() == 0
    other.context.close()
    assert server[1].poll() is None
