"""Bring your own data: an ImageFolder tree, no code.

Writes scikit-learn's digits as 16 x 16 PNG files in torchvision's ImageFolder layout
(OUT/data/train/<class>/*.png and OUT/data/test/<class>/*.png, classes "zero".."nine"),
then runs GENE-FL on that folder with the command a user would type:

    genefl run --dataset imagefolder --data-dir OUT/data --image-size 16 --output-dir OUT/run

(``--tiny`` loads the images resized to 8 x 8, a quarter of the work.)

Usage: python examples/own_data_imagefolder.py [--tiny] [--out OUT]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import cli_options, parse_args, scale
from PIL import Image
from sklearn.datasets import load_digits

from genefl.cli import main

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_imagefolder(root: Path, per_class: int | None = None) -> Path:
    """Digits as ``root/{train,test}/<class>/<index>.png`` (a fifth of each class for
    test); ``per_class`` images of each class, or all of them.
    """
    digits = load_digits()
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        chosen = rng.permutation(np.flatnonzero(digits.target == label))[:per_class]
        n_test = len(chosen) // 5
        for split, indices in (("test", chosen[:n_test]), ("train", chosen[n_test:])):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in indices:
                pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
                image = Image.fromarray(pixels).resize((16, 16), Image.Resampling.NEAREST)
                image.save(folder / f"{i}.png")
    return root


if __name__ == "__main__":
    args = parse_args(__doc__, "own_data")
    data = write_imagefolder(args.out / "data", per_class=60 if args.tiny else None)
    size = 8 if args.tiny else 16
    argv = [
        "run", "--dataset", "imagefolder", "--data-dir", str(data), "--image-size", str(size),
        "--output-dir", str(args.out / "run"), "--overwrite", *cli_options(scale(args.tiny)),
    ]
    print("$ genefl " + " ".join(argv), flush=True)
    raise SystemExit(main(argv))
