"""Write the UTKFace validation and tuning splits: seeded random, never trained on.

UTKFace's names start with the age, so "the last N by name" is a split of the very old and the
very young; a seeded random draw is not. The lists are kept in the repository (utkface_val.txt:
500 faces for every reported number; utkface_tune.txt: 100 more for choosing settings), and
`spgd train --exclude` leaves both out of training. Re-running reproduces the same files:

    python bench/splits/make_splits.py ../shared/datasets/utkface
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spgd.io import list_images

SEED = 20261129
SPLITS = {"utkface_val.txt": 500, "utkface_tune.txt": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("utkface", type=Path, help="the UTKFace folder")
    args = parser.parse_args()
    names = [p.name for p in list_images([args.utkface])]
    order = np.random.default_rng(SEED).permutation(len(names))
    start = 0
    for file, count in SPLITS.items():
        chosen = sorted(names[i] for i in order[start:start + count])
        (Path(__file__).parent / file).write_text("".join(f"{n}\n" for n in chosen))
        start += count
        print(f"{file}: {count} of {len(names)} faces")


if __name__ == "__main__":
    main()
