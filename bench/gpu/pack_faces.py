"""Pack the face data a GPU session needs into archives that fit the device tool's 64 MiB transfer.

The lent GPU machine receives the repository tree plus carried folders, 64 MiB in all, and cannot
read ../shared. UTKFace at 64x64 is 260 MiB raw and 160 MiB as PNG, so the training split travels
as JPEG (quality 90, no chroma subsampling: 54 MiB in a stored zip, 39.7 dB PSNR against the 64x64
originals, measured on 494 of the faces); the evaluation images travel losslessly as PNG:

    .data/gpu_train/utkface64_train.zip  the first N - holdout - tune UTKFace files by name, 64x64 JPEG
    .data/gpu_eval/utkface64_val.zip     the last `holdout` files by name (never trained on), 64x64 PNG
    .data/gpu_eval/utkface64_tune.zip    the `tune` (100) files before them, 64x64 PNG, not trained on
                                         either: for choosing sampler settings (the box-inpainting lr)
                                         on faces the prior has not seen, without touching the validation split
    .data/gpu_eval/ffhq64.zip            ffhq-demo resized to 64x64, PNG
    .data/gpu_eval/cache/                the AlexNet LPIPS weights, if `spgd weights fetch` cached them
                                         (the GPU machine cannot fetch; point SPGD_CACHE here)
    .data/gpu_*/manifest.json            counts, sizes, sha256 of each archive and the settings
    .data/utkface64_train_fid/           every 22nd training file (1,005 faces, all ages), 64x64 PNG:
                                         the reference of a second FID, here on the CPU (not carried)

Every image is centre-cropped and resized (Lanczos) exactly as `spgd train` and `spgd bench --resize`
do, so a 64x64 file passes through them unchanged. `.data/` is ignored by git. The two folders are
carried separately (together they exceed 64 MiB): `.data/gpu_train` by the training calls,
`.data/gpu_eval` by the evaluation calls (see bench/gpu/README.md). Usage (from the repository root):

    python bench/gpu/pack_faces.py --utkface ../shared/datasets/utkface --ffhq ../shared/datasets/ffhq-demo
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

from PIL import Image

from spgd.io import atomic_write_bytes, center_crop_resize, list_images
from spgd.weights import cache_dir

TRANSFER_LIMIT = 64 * 2 ** 20


def encode(path: Path, size: int, fmt: str, quality: int) -> bytes:
    """One image, centre-cropped and resized to size x size, encoded as JPEG or PNG bytes."""
    with Image.open(path) as img:
        img = center_crop_resize(img.convert("RGB"), (size, size))
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality, subsampling=0)
    else:
        img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def write_zip(paths: list[Path], out: Path, size: int, fmt: str, quality: int = 90) -> dict:
    """Encode `paths` into the zip `out` (stored, not deflated: the images are compressed already; a
    zip entry costs ~100 bytes where a tar entry costs ~1 KiB); returns its manifest entry."""
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for path in paths:
            archive.writestr(Path(path.name).stem + suffix, encode(path, size, fmt, quality))
    blob = buf.getvalue()
    atomic_write_bytes(out, blob)
    return {"file": out.name, "images": len(paths), "bytes": len(blob), "format": fmt,
            "sha256": hashlib.sha256(blob).hexdigest()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utkface", type=Path, required=True, help="UTKFace folder (22,707 faces)")
    p.add_argument("--ffhq", type=Path, help="ffhq-demo folder (optional)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--holdout", type=int, default=500, help="last N files by name: the validation split")
    p.add_argument("--tune", type=int, default=100, help="N files before the validation split, held out of "
                                                          "training too: the tuning set")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the training split")
    p.add_argument("--out", type=Path, default=Path(".data"), help="parent of gpu_train/ and gpu_eval/")
    args = p.parse_args()

    faces = list_images([args.utkface])
    if len(faces) <= args.holdout:
        raise SystemExit(f"{args.utkface}: {len(faces)} images, cannot hold out {args.holdout}")
    if not 0 < args.tune < len(faces) - args.holdout:
        raise SystemExit(f"--tune must be between 1 and {len(faces) - args.holdout - 1}, got {args.tune}")
    split = len(faces) - args.holdout - args.tune
    train, tune, val = faces[:split], faces[split: split + args.tune], faces[split + args.tune:]
    train_dir, eval_dir = args.out / "gpu_train", args.out / "gpu_eval"
    folders = {train_dir: [write_zip(train, train_dir / f"utkface{args.size}_train.zip", args.size, "JPEG",
                                     args.quality)],
               eval_dir: [write_zip(val, eval_dir / f"utkface{args.size}_val.zip", args.size, "PNG"),
                          write_zip(tune, eval_dir / f"utkface{args.size}_tune.zip", args.size, "PNG")]}
    if args.ffhq:
        folders[eval_dir].append(write_zip(list_images([args.ffhq]), eval_dir / f"ffhq{args.size}.zip",
                                           args.size, "PNG"))
    fid_dir = args.out / f"utkface{args.size}_train_fid"
    fid_dir.mkdir(parents=True, exist_ok=True)
    for path in train[::22]:
        atomic_write_bytes(fid_dir / (Path(path.name).stem + ".png"), encode(path, args.size, "PNG", 0))
    lpips_weights = cache_dir() / "lpips_alex.safetensors"
    if lpips_weights.is_file():
        (eval_dir / "cache").mkdir(exist_ok=True)
        shutil.copy(lpips_weights, eval_dir / "cache" / lpips_weights.name)
    else:
        print(f"no {lpips_weights}: run `spgd weights fetch` first to score LPIPS on the GPU machine")
    for folder, entries in folders.items():
        total = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        manifest = {"size": args.size, "holdout": args.holdout, "tune": args.tune, "jpeg_quality": args.quality,
                    "first_val_file": val[0].name, "archives": entries, "folder_bytes": total}
        atomic_write_bytes(folder / "manifest.json", json.dumps(manifest, indent=2).encode())
        for e in entries:
            print(f"{folder / e['file']}: {e['images']} images, {e['bytes'] / 2 ** 20:.1f} MiB")
        print(f"{folder}: {total / 2 ** 20:.1f} MiB of the {TRANSFER_LIMIT // 2 ** 20} MiB a device call carries")
        if total > TRANSFER_LIMIT - 4 * 2 ** 20:
            raise SystemExit(f"{folder} is too large to carry with the repository: lower --quality")


if __name__ == "__main__":
    main()
