"""The public pixel-space checkpoints, fetched by name into a cache: `--model ffhq256`, `--model imagenet256`.

A download shows a progress bar, resumes an interrupted transfer (an HTTP Range request for the bytes
still missing, appended to `<file>.part`), checks the size and the sha256, and only then moves the file
into place. Where a hash is published it is checked at every load; where none is (OpenAI's release),
the sha256 of the first complete download is recorded beside the file (`<file>.sha256`) and every later
load is checked against it. torch.hub's downloader cannot resume and huggingface_hub serves only its own
hub (one of the two files is elsewhere), so the transfer is the standard library's urllib.

The cache is `$SPGD_MODELS`, else `$SPGD_CACHE/models`, else `~/.cache/spgd/models`. Offline, put the
file there by hand under the name the error message gives.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..weights import cache_dir
from .errors import CheckpointError

CHUNK = 1 << 20


@dataclass(frozen=True)
class PublicCheckpoint:
    """A published checkpoint: where it is, what it must be, and which architecture it has."""

    url: str
    filename: str
    arch: str | dict[str, Any]
    source: str
    licence: str
    size: int | None = None
    sha256: str | None = None


PUBLIC_CHECKPOINTS: dict[str, PublicCheckpoint] = {
    "ffhq256": PublicCheckpoint(
        url="https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",
        filename="ffhq_10m.pt", arch="ffhq256",
        source="the FFHQ-256 ADM of DPS (Chung et al., ICLR 2023), ffhq_10m.pt; mirrored by DeepInverse",
        licence="trained on FFHQ (CC BY-NC-SA 4.0): non-commercial use",
        size=374_417_833, sha256="81d535743156ec6be34d8668e6920da94f0614074d7793a16c8fa9e306237faa"),
    "imagenet256": PublicCheckpoint(
        url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
        filename="256x256_diffusion_uncond.pt", arch="imagenet256",
        source="OpenAI's guided-diffusion unconditional ImageNet-256 model (Dhariwal & Nichol, 2021)",
        licence="MIT (the guided-diffusion release); trained on ImageNet (its terms of use)"),
}


class CheckpointFetchError(CheckpointError):
    """A public checkpoint could not be downloaded or does not verify; the message says what to do."""


def models_dir() -> Path:
    """Where public checkpoints are kept (see the module docstring)."""
    env = os.environ.get("SPGD_MODELS")
    return Path(env).expanduser() if env else cache_dir() / "models"


def checkpoint_path(name: str, root: Path | None = None) -> Path:
    """The cache path of public checkpoint `name` (whether or not it is there yet)."""
    return (root or models_dir()) / PUBLIC_CHECKPOINTS[name].filename


def fetch_checkpoint(name: str, url: str | None = None, root: Path | None = None, progress: bool = True) -> Path:
    """The verified local file of public checkpoint `name`, downloaded first if it is not complete yet.

    `url` replaces the published address (a mirror, or a test server); `root` the cache folder.
    """
    if name not in PUBLIC_CHECKPOINTS:
        raise CheckpointError(f"unknown public checkpoint {name!r}; known: {', '.join(PUBLIC_CHECKPOINTS)}")
    info = PUBLIC_CHECKPOINTS[name]
    path = checkpoint_path(name, root)
    if not path.is_file():
        part = _download(name, info, url or info.url, path, progress)
        _verify(name, info, part, path)
        shutil.move(str(part), str(path))
    _verify(name, info, path, path)
    return path


def _download(name: str, info: PublicCheckpoint, url: str, path: Path, progress: bool) -> Path:
    """Fetch `url` into `<path>.part` (resuming it if it exists) and check its size; returns the part file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    if info.size is not None and done > info.size:  # longer than the file can be: start again
        part.unlink()
        done = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if done and response.status != 206:  # the server ignored the range: start again
                done = 0
            total = _total(response, done)
            with open(part, "ab" if done else "wb") as out, tqdm(
                    total=total, initial=done, unit="B", unit_scale=True, desc=f"downloading {name}",
                    disable=not progress, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        if error.code == 416 and info.size is not None and done == info.size:  # .part was already complete
            pass
        else:
            raise _fetch_error(name, info, url, path, f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as error:
        reason = str(getattr(error, "reason", None) or error) or type(error).__name__
        if part.is_file() and part.stat().st_size:
            reason += "; the part fetched so far is kept and the same command resumes it"
        raise _fetch_error(name, info, url, path, reason) from None
    size = part.stat().st_size
    if info.size is not None and size != info.size:
        raise _fetch_error(name, info, url, path, f"the transfer ended after {size:,} of {info.size:,} bytes; "
                                                  "the same command resumes it")
    return part


def _total(response, done: int) -> int | None:
    """The whole file's size from a (partial) response's headers, if it says."""
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return done + int(length) if length and length.isdigit() else None


def _verify(name: str, info: PublicCheckpoint, file: Path, path: Path) -> None:
    """`file` (a finished download, or the cached `path`) against the published size and sha256, or against
    the hash recorded at the first download. A download that fails is deleted; a cached file is named."""
    digest = _sha256(file)
    recorded = path.with_name(path.name + ".sha256")
    expected = info.sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
    if info.size is not None and file.stat().st_size != info.size:
        problem = f"{file.stat().st_size:,} bytes, but {name} is {info.size:,} bytes"
    elif expected is not None and digest != expected:
        where = "published" if info.sha256 else f"recorded at its first download ({recorded})"
        problem = f"sha256 {digest} differs from the {where} {expected}"
    else:
        if expected is None:
            recorded.write_text(digest + "\n")  # trust on first use: every later load must match this download
        return
    if file != path:
        file.unlink()
        raise CheckpointFetchError(f"the download of {name} is corrupt ({problem}); it was deleted: run again")
    raise CheckpointFetchError(f"{path}: {problem}; the file is corrupt or not the expected release: delete it "
                               "and run again")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_error(name: str, info: PublicCheckpoint, url: str, path: Path, reason: str) -> CheckpointFetchError:
    return CheckpointFetchError(f"cannot download {name} from {url} ({reason}); without internet, put the file "
                                f"by hand at {path} ({info.source})")
