"""Shared fixtures and the rule for ../shared.

Tests that read the project's ../shared folder (reference outputs, key lists, the tiny model, demo
images) are marked `shared`: they skip when the folder is absent, with a reason that names the file,
what it is and that a clone of the repository does not have it, and fail when the folder is present
but a file is missing. If ../shared is present and no shared test passed, the session fails: a run
that silently skipped them all must not look green. SPGD_SHARED=PATH points at another copy of the
folder (SPGD_SHARED=/nonexistent runs the suite as on a bare clone).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED = Path(os.environ.get("SPGD_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
REFERENCE = SHARED / "reference"
DATASETS = SHARED / "datasets"


def pytest_configure(config) -> None:
    """One torch thread everywhere (subprocesses too): tiny models and per-image loops run fastest on one,
    and a busy 2-core machine slows down several-fold with two."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


SHARED_FIXTURES = {"tiny_prior_path", "tiny_prior", "golden", "ffhq_demo", "cases"}


SHARED_FILES = {  # what each file of ../shared the tests read is, for the skip reason
    "tiny_adm64.pt": "a tiny ADM model the reference outputs were computed with",
    "spgd_cases.pt": "outputs of the published SPGD code on the tiny model, step by step",
    "lpips": "LPIPS reference example images with their published scores",
    "ffhq-demo": "10 FFHQ faces at 256x256",
}


def need(path: Path) -> Path:
    """`path` inside ../shared: skip without the folder (the reason says what the file is and that a clone
    lacks it), fail if the folder is there but lacks the file."""
    if not SHARED.is_dir():
        what = SHARED_FILES.get(path.name, "the state-dict keys of a public checkpoint's architecture"
                                if path.name.startswith("adm_keys_") else "reference data")
        pytest.skip(f"needs the project's ../shared folder, which a clone of the repository does not have: "
                    f"{path.relative_to(SHARED)} ({what}); SPGD_SHARED=PATH points at a copy")
    if not path.exists():
        pytest.fail(f"{path} is missing from the project's ../shared folder")
    return path


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


_shared_passed: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.when == "call" and report.passed and "shared" in report.keywords:
        _shared_passed.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    shared_tests = [i for i in session.items if i.get_closest_marker("shared")]
    if SHARED.is_dir() and shared_tests and not _shared_passed and exitstatus == 0:
        session.config.get_terminal_writer().line(
            f"error: ../shared is present but none of the {len(shared_tests)} tests that need it passed", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def kernel_wizard_weights(tmp_path_factory) -> Path:
    """A randomly initialised KernelWizard saved like the released GOPRO_wVAE.pth (same keys and shapes)."""
    from spgd.operators.nonlinear_blur import KernelWizard

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("kernel_wizard") / "GOPRO_wVAE.pth"
    torch.save(KernelWizard().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_prior_path() -> Path:
    return need(REFERENCE / "tiny_adm64.pt")


@pytest.fixture(scope="session")
def tiny_prior(tiny_prior_path):
    from spgd import load_prior

    return load_prior(tiny_prior_path)


@pytest.fixture(scope="session")
def golden() -> dict:
    return torch.load(need(REFERENCE / "spgd_cases.pt"), map_location="cpu", weights_only=False)


@pytest.fixture(scope="session")
def ffhq_demo() -> Path:
    return need(DATASETS / "ffhq-demo")


@pytest.fixture
def one_thread():
    """Tiny networks and per-image loops run fastest on one thread, above all on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_face_like(path: Path, size: int = 64, seed: int = 0) -> Path:
    """A smooth random RGB image (low-frequency noise) of size x size, saved in the format its suffix names."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0]
    Image.fromarray((img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    return path

