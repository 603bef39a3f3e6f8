"""Shared fixtures: the reference data in ../shared (tests skip with the reason when it is absent)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "reference"
DATASETS = SHARED / "datasets"
BENCH = Path(__file__).resolve().parents[1] / "bench"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (the project's ../shared folder is absent)")
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


def bench_script(name: str) -> ModuleType:
    """A script of bench/ imported as a module (bench/ goes on sys.path: scripts import their neighbours)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
