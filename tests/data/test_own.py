"""Issue 15, own data: ``--dataset imagefolder`` (an ImageFolder tree) and ``--dataset npz``
(one .npz file): layouts, channels, resizing, the cache, every error, and runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genefl.cli import main
from genefl.config import resolve
from genefl.data import own
from genefl.data.datasets import check_dataset_files, dataset_shape, load_dataset
from genefl.engine.simulation import validate_protocol
from genefl.errors import ConfigError, DataError
from genefl.models import build_model

CLASSES = ("cat", "dog", "eel", "fox")


def separable(label: int, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """An ``(size, size)`` uint8 image: a bright quadrant per class plus noise."""
    img = rng.normal(40, 15, (size, size))
    h = size // 2
    r, c = divmod(label, 2)
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] += 160
    return np.clip(img, 0, 255).astype(np.uint8)


def write_folder(
    root: Path, n_train: int = 20, n_test: int = 6, size: int = 8, rgb: bool = False,
    jpeg: bool = True, seed: int = 0,
) -> Path:
    """An ImageFolder tree of 4 classes; grey PNGs (``rgb``: every other one in colour),
    one JPEG per class and split when ``jpeg``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                grey = separable(label, rng, size)
                if rgb and i % 2:
                    image = Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=2))
                else:
                    image = Image.fromarray(grey)
                if jpeg and i == 0:
                    image.save(folder / f"{i:03d}.JPG", quality=95)
                else:
                    image.save(folder / f"{i:03d}.png")
    return root


def npz_arrays(n_train: int = 20, n_test: int = 6, size: int = 8, seed: int = 0) -> dict:
    """Separable grey images ``(N, 1, H, W)`` uint8 with labels 0..3."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = np.repeat(np.arange(4), n)
        out[f"x_{split}"] = np.stack([separable(int(y), rng, size) for y in labels])[:, None]
        out[f"y_{split}"] = labels
    return out


def write_npz(path: Path, layout: str = "NCHW", floats: bool = False, **arrays) -> Path:
    data = npz_arrays()
    for split in ("train", "test"):
        x = data[f"x_{split}"]
        if layout == "NHWC":
            x = np.repeat(x, 3, axis=1).transpose(0, 2, 3, 1)
        elif layout == "NHW":
            x = x[:, 0]
        data[f"x_{split}"] = x / 255.0 if floats else x
    data.update(arrays)
    np.savez(path, **data)
    return path


# ----------------------------------------------------------------------- imagefolder


def test_imagefolder_grey_loads_with_sorted_classes(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d")
    ds = load_dataset("imagefolder", root)
    assert ds.image_shape == (1, 8, 8) and ds.num_classes == 4
    assert ds.train_images.dtype == np.uint8 and ds.train_images.flags.c_contiguous
    assert np.bincount(ds.train_labels).tolist() == [20] * 4
    assert np.bincount(ds.test_labels).tolist() == [6] * 4
    # the PNG's pixels come through exactly: class "dog" (label 1), file 001.png
    want = np.asarray(Image.open(root / "train" / "dog" / "001.png"))
    assert np.array_equal(ds.train_images[20 + 1, 0], want)
    assert dataset_shape("imagefolder", root) == ((1, 8, 8), 4)
    check_dataset_files("imagefolder", root)


def test_imagefolder_any_colour_image_makes_three_channels(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", rgb=True)
    ds = load_dataset("imagefolder", root)
    assert ds.image_shape == (3, 8, 8)
    grey = np.asarray(Image.open(root / "train" / "cat" / "002.png"))
    assert all(np.array_equal(ds.train_images[2, c], grey) for c in range(3))  # repeated
    colour = np.asarray(Image.open(root / "train" / "cat" / "001.png"))
    assert np.array_equal(ds.train_images[1], colour.transpose(2, 0, 1))
    assert dataset_shape("imagefolder", root) == ((3, 8, 8), 4)


def test_imagefolder_resizes_to_image_size(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n_train=2, n_test=1)
    Image.fromarray(np.full((5, 11), 200, np.uint8)).save(root / "train" / "cat" / "z.png")
    ds = load_dataset("imagefolder", root, image_size=16)
    assert ds.image_shape == (1, 16, 16)
    assert np.all(ds.train_images[2, 0] == 200)  # the 11x5 image, stretched
    assert dataset_shape("imagefolder", root, 16) == ((1, 16, 16), 4)


def test_imagefolder_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_folder(tmp_path / "d", n_train=3, n_test=2)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", root, cache_dir=cache)
    files = list(cache.glob("imagefolder-*.npz"))
    assert len(files) == 1
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written
    own._MEMORY.clear()

    def no_decode(*args):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(own, "_decode", no_decode)
    again = load_dataset("imagefolder", root, cache_dir=cache)
    assert np.array_equal(again.train_images, first.train_images)
    assert np.array_equal(again.test_labels, first.test_labels)
    # a changed file (size / time) is a new key: decoded again
    os.utime(root / "train" / "cat" / "001.png", ns=(1, 1))
    own._MEMORY.clear()
    with pytest.raises(AssertionError, match="decoded"):
        load_dataset("imagefolder", root, cache_dir=cache)


def test_imagefolder_is_decoded_once_per_process(tmp_path: Path, monkeypatch) -> None:
    root = write_folder(tmp_path / "d", n_train=2, n_test=1)
    first = load_dataset("imagefolder", root)
    monkeypatch.setattr(own, "_decode", lambda *a: (_ for _ in ()).throw(AssertionError))
    assert load_dataset("imagefolder", root) is first
    # another folder with the same names, sizes and times (BMP: sizes fixed) is another
    # data set
    monkeypatch.undo()
    folders = []
    for k, name in enumerate(("e", "f")):
        folder = tmp_path / name
        for split in ("train", "test"):
            for c in ("a", "b"):
                (folder / split / c).mkdir(parents=True)
                image = Image.fromarray(np.full((4, 4), 10 * k + (c == "b"), np.uint8))
                image.save(folder / split / c / "0.bmp")
                os.utime(folder / split / c / "0.bmp", ns=(5, 5))
        folders.append(folder)
    first = load_dataset("imagefolder", folders[0])
    second = load_dataset("imagefolder", folders[1])
    assert first.train_images[0, 0, 0, 0] == 0 and second.train_images[0, 0, 0, 0] == 10


def _truncate(path: Path, keep: float = 0.0) -> None:
    """Cut the file to 40 bytes (inside the header), or to ``keep`` of its length."""
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if keep else 40])


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda r: (r / "train" / "dog" / "notes.txt").write_text("hi"),
         "notes.txt: not an image file"),
        (lambda r: _truncate(r / "test" / "eel" / "003.png"), "003.png: not a readable image"),
        (lambda r: _truncate(r / "test" / "eel" / "002.png", 0.6),
         "002.png: not a readable image"),  # header intact, pixels cut
        (lambda r: (r / "train" / "dog" / "004.png").write_bytes(b"\x89PNG garbage"),
         "004.png: not a readable image"),
        (lambda r: (r / "test" / "gnu").mkdir(), "only in test/: gnu"),
        (lambda r: (r / "train" / "gnu").mkdir() or (r / "test" / "gnu").mkdir(),
         "class 'gnu' has no images"),
        (lambda r: (r / "train" / "README").write_text("x"), "README: a file directly in"),
        (lambda r: [p.unlink() for p in (r / "test").rglob("*.*")]
         and [p.rmdir() for p in (r / "test").iterdir()] and (r / "test").rmdir(),
         "missing test/ folder"),
    ],
)
def test_imagefolder_errors_name_the_file_and_the_fix(tmp_path: Path, damage, needle) -> None:
    root = write_folder(tmp_path / "d", n_train=5, n_test=5)
    damage(root)
    with pytest.raises(DataError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        load_dataset("imagefolder", root)


def test_imagefolder_non_square_default_size_and_missing_dir(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", n_train=2, n_test=1, jpeg=False)
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(root / "train" / "cat" / "000.png")
    with pytest.raises(DataError, match="000.png: the first training image is 9x6.*--image-size"):
        load_dataset("imagefolder", root)
    assert load_dataset("imagefolder", root, image_size=8).image_shape == (1, 8, 8)
    with pytest.raises(DataError, match="needs --data-dir"):
        check_dataset_files("imagefolder", None)
    with pytest.raises(DataError, match="no such folder"):
        load_dataset("imagefolder", tmp_path / "nope")


def test_image_size_and_cache_dir_only_for_imagefolder() -> None:
    with pytest.raises(ConfigError, match="--image-size applies to --dataset imagefolder"):
        resolve({}, {"image_size": 16})
    with pytest.raises(ConfigError, match="--cache-dir applies to --dataset imagefolder"):
        resolve({}, {"dataset": "npz", "cache_dir": "/tmp/x"})
    with pytest.raises(ConfigError, match="--image-size must be in"):
        resolve({}, {"dataset": "imagefolder", "image_size": 0})


def test_too_few_images_or_classes_for_the_protocol(tmp_path: Path) -> None:
    ds = load_dataset("imagefolder", write_folder(tmp_path / "d", n_train=3, n_test=1))
    config, _ = resolve({}, {"dataset": "imagefolder", "shards": 5})
    with pytest.raises(ConfigError, match="--shards 5 exceeds the 4 classes"):
        validate_protocol(config, ds)
    config, _ = resolve({}, {"dataset": "imagefolder", "shards": 2, "known_clients": 20})
    with pytest.raises(ConfigError, match="--known-clients 20 is too many"):
        validate_protocol(config, ds)


# ----------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout", ["NCHW", "NHW"])
def test_npz_layouts_and_floats_agree(tmp_path: Path, layout: str) -> None:
    ref = npz_arrays()
    for floats in (False, True):
        ds = load_dataset("npz", write_npz(tmp_path / f"{floats}.npz", layout, floats))
        assert ds.image_shape == (1, 8, 8) and ds.num_classes == 4
        assert np.array_equal(ds.train_images, ref["x_train"])
        assert np.array_equal(ds.test_labels, ref["y_test"])
        assert dataset_shape("npz", tmp_path / f"{floats}.npz") == ((1, 8, 8), 4)


def test_npz_float_pixels_round_to_nearest(tmp_path: Path) -> None:
    x = np.full((80, 1, 8, 8), 0.999)
    x[:, :, 0, 0] = 0.5 / 255
    x[:, :, 0, 1] = 0.49 / 255
    ds = load_dataset("npz", write_npz(tmp_path / "f.npz", x_train=x))
    assert ds.train_images[0, 0, 0, :3].tolist() == [0, 0, 255]  # round half to even


def test_npz_nhwc_rgb(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "a.npz", "NHWC")
    ds = load_dataset("npz", path)
    assert ds.image_shape == (3, 8, 8)
    assert np.array_equal(ds.train_images[:, 2], npz_arrays()["x_train"][:, 0])
    assert dataset_shape("npz", path) == ((3, 8, 8), 4)


def test_npz_layout_rule() -> None:
    assert own.npz_layout((5, 28, 28, 1)) == "NHWC"
    assert own.npz_layout((5, 32, 32, 3)) == "NHWC"
    assert own.npz_layout((5, 3, 32, 32)) == "NCHW"
    assert own.npz_layout((5, 3, 8, 3)) == "NCHW"  # ambiguous: NCHW


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"x_test": np.zeros((3, 1, 1, 8, 8), np.uint8)}, "'x_test' has shape (3, 1, 1, 8, 8)"),
        ({"x_train": np.zeros((80, 4, 8, 8), np.uint8)}, "4 channels"),
        ({"x_train": np.full((80, 1, 8, 8), 1.5)}, "must be finite and in [0, 1]"),
        ({"x_train": np.zeros((80, 1, 8, 8), np.int32)}, "dtype int32"),
        ({"y_train": np.full(80, -1)}, "'y_train' must lie in"),
        ({"y_train": np.zeros(79, np.int64)}, "one label per image (80)"),
        ({"y_test": np.full(24, 7)}, "class(es) 4, 5, 6, 7 have no training images"),
        ({"y_train": np.full(80, 0.5)}, "'y_train' are not integers"),
        ({"x_test": np.zeros((24, 1, 9, 9), np.uint8)}, "both splits need the same"),
        ({"x_train": np.zeros((0, 1, 8, 8), np.uint8), "y_train": np.zeros(0, np.int64)},
         "holds no images"),
    ],
)
def test_npz_errors_name_the_file_and_the_fix(tmp_path: Path, arrays: dict, needle: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset("npz", path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_npz_bad_files(tmp_path: Path) -> None:
    data = npz_arrays()
    del data["y_test"]
    np.savez(tmp_path / "missing.npz", **data)
    with pytest.raises(DataError, match="missing array.*y_test"):
        load_dataset("npz", tmp_path / "missing.npz")
    objects = npz_arrays()
    objects["y_train"] = np.array([{"a": 1}] * 80, dtype=object)
    np.savez(tmp_path / "pickled.npz", **objects)
    with pytest.raises(DataError, match="pickled.npz: not a readable .npz"):
        load_dataset("npz", tmp_path / "pickled.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="text.npz: not a readable"):
        dataset_shape("npz", tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(DataError, match="a single .npy array"):
        load_dataset("npz", tmp_path / "one.npy")
    with pytest.raises(DataError, match="no such file"):
        check_dataset_files("npz", tmp_path / "nope.npz")


# ----------------------------------------------------------------------- end to end

TINY = ["--known-clients", "2", "--agnostic-clients", "2", "--clusters", "1",
        "--clients-per-round", "2", "--known-rounds", "3", "--agnostic-rounds", "1",
        "--local-epochs", "2", "--batch-size", "16", "--shards", "2", "--quiet"]


@pytest.mark.parametrize("rgb, extra", [(False, []), (True, ["--image-size", "12"])])
def test_imagefolder_run_end_to_end(tmp_path: Path, rgb: bool, extra: list[str]) -> None:
    root = write_folder(tmp_path / "data", rgb=rgb)
    out = tmp_path / "o"
    code = main(["run", "--dataset", "imagefolder", "--data-dir", str(root), *extra,
                 "--cache-dir", str(tmp_path / "cache"), *TINY, "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["known_accuracy"] > 0.75  # 2 classes per client: chance is 0.5
    assert list((tmp_path / "cache").glob("imagefolder-*.npz"))
    # the model was built for the images' channels and --image-size
    channels, size = (3, 12) if rgb else (1, 8)
    net = build_model("cnn", channels, 4, size, torch.Generator())
    assert results["model_bytes"] == 4 * sum(
        t.numel() for t in net.state_dict().values() if t.is_floating_point())


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_npz_run_end_to_end(tmp_path: Path, layout: str) -> None:
    path = write_npz(tmp_path / "data.npz", layout, floats=layout == "NHWC")
    out = tmp_path / "o"
    code = main(["run", "--dataset", "npz", "--data-dir", str(path), *TINY,
                 "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["known_accuracy"] > 0.75


def test_bad_own_data_is_one_line_exit_2_before_any_work(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", n_train=4, n_test=2)
    _truncate(root / "train" / "fox" / "002.png", 0.6)
    path = write_npz(tmp_path / "bad.npz", y_train=np.full(80, 9))
    for args, needle in (
        (["--dataset", "imagefolder", "--data-dir", str(root)], "002.png"),
        (["--dataset", "npz", "--data-dir", str(path)], "bad.npz"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "genefl.cli", "run", *args, "--output-dir",
             str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o").exists()
