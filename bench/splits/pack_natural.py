"""Hold out the natural-image tuning images and pack random crops of the rest for `spgd train`.

The training set is the classic "291 images" (T91 + BSD200 of ../shared/datasets/sr/); Set5, Set14
and BSD100 are test sets and never read here. Byte-identical copies are dropped first (T91 has one), then a seeded random 10 of the 290 become the tuning split
(`natural_tune.txt`, the images settings are chosen on); every other image gives `--per-image` random
crops of `--size` pixels at its native scale, each under a random one of the 8 flips/rotations, into a
uint8 N x 3 x S x S .npy that `spgd train --data` takes as it is. Re-running reproduces both files:

    python bench/splits/pack_natural.py ../shared/datasets/sr --out .data/natural64.npy

With `--write DIR`, the tuning images are also copied to DIR as PNG, cropped to a multiple of 4
(top-left kept, as the SR test packs are), ready for `spgd bench --data`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from spgd.io import atomic_write_bytes, list_images

SEED = 20261202
TRAIN_FOLDERS = ("T91", "BSD200")
TUNE_COUNT = 10
TUNE_LIST = Path(__file__).parent / "natural_tune.txt"


def random_crops(image: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random size x size crops of an H x W x 3 array, each flipped/rotated at random."""
    h, w = image.shape[:2]
    crops = []
    for _ in range(count):
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crop = np.rot90(image[top:top + size, left:left + size], k=int(rng.integers(4)))
        crops.append(crop[:, ::-1] if rng.integers(2) else crop)
    return np.stack(crops).transpose(0, 3, 1, 2)


def distinct_files(files: list[Path]) -> list[Path]:
    """The files with byte-identical copies dropped (T91's t65 is t36), so no image is both trained
    on and held out."""
    seen: set[str] = set()
    kept = []
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sr", type=Path, help="the folder holding T91/ and BSD200/")
    parser.add_argument("--out", type=Path, required=True, help="the .npy of training crops to write")
    parser.add_argument("--size", type=int, default=64, help="side of a crop (default: %(default)s)")
    parser.add_argument("--per-image", type=int, default=128, help="crops per training image (default: %(default)s)")
    parser.add_argument("--write", type=Path, help="also write the tuning images to this folder as PNG")
    args = parser.parse_args()
    files = distinct_files(list_images([args.sr / f for f in TRAIN_FOLDERS]))
    rng = np.random.default_rng(SEED)
    tune = {files[i].name for i in rng.permutation(len(files))[:TUNE_COUNT]}
    TUNE_LIST.write_text("".join(f"{n}\n" for n in sorted(tune)))
    crops = []
    for path in files:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        if path.name in tune:
            if args.write:
                args.write.mkdir(parents=True, exist_ok=True)
                h, w = (s - s % 4 for s in image.shape[:2])
                Image.fromarray(image[:h, :w]).save(args.write / (path.stem + ".png"))
            continue
        crops.append(random_crops(image, args.size, args.per_image, rng))
    array = np.ascontiguousarray(np.concatenate(crops))
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"{TUNE_LIST.name}: {len(tune)} of {len(files)} images; {args.out}: {array.shape[0]} crops "
          f"of {args.size}x{args.size} from {len(files) - len(tune)} images")


if __name__ == "__main__":
    main()
