"""Write the UTKFace validation and tuning splits: seeded random, never trained on.

UTKFace's names start with the age, so "the last N by name" is a split of the very old and the
very young; a seeded random draw is not. The lists are kept in the repository (utkface_val.txt:
500 faces for every reported number; utkface_tune.txt: 100 more for choosing settings), and
`spgd train --exclude` leaves both out of training. Re-running reproduces the same files:

    python bench/splits/make_splits.py ../shared/datasets/utkface

With `--write DIR --size 64`, the two splits are also written as image folders DIR/val and DIR/tune,
centre-cropped and resized exactly as training prepares its images (PNG, lossless), ready for
`spgd bench --data` and `bench/quality.py`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from spgd.io import center_crop_resize, list_images

SEED = 20261129
SPLITS = {"utkface_val.txt": 500, "utkface_tune.txt": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("utkface", type=Path, help="the UTKFace folder")
    parser.add_argument("--write", type=Path, help="also write the splits as image folders DIR/val and DIR/tune")
    parser.add_argument("--size", type=int, default=64, help="side of the written images (default: %(default)s)")
    args = parser.parse_args()
    names = [p.name for p in list_images([args.utkface])]
    order = np.random.default_rng(SEED).permutation(len(names))
    start = 0
    for file, count in SPLITS.items():
        chosen = sorted(names[i] for i in order[start:start + count])
        (Path(__file__).parent / file).write_text("".join(f"{n}\n" for n in chosen))
        start += count
        print(f"{file}: {count} of {len(names)} faces")
        if args.write:
            folder = args.write / file.removeprefix("utkface_").removesuffix(".txt")
            folder.mkdir(parents=True, exist_ok=True)
            for name in chosen:
                with Image.open(args.utkface / name) as image:
                    image = center_crop_resize(image.convert("RGB"), (args.size, args.size))
                image.save(folder / (Path(name).name.split(".")[0] + ".png"))


if __name__ == "__main__":
    main()
