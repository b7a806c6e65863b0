from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from genefl.data.datasets import (
    DATASETS,
    DEFAULT_FASHION_MNIST_DIR,
    ImageDataset,
    check_dataset_files,
    load_dataset,
)
from genefl.errors import ConfigError, DataError

FMNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _assert_contract(ds: ImageDataset, shape: tuple[int, int, int], classes: int) -> None:
    for images, labels in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        assert images.dtype == np.uint8 and images.flags.c_contiguous
        assert images.shape[1:] == shape
        assert labels.dtype == np.int64 and labels.shape == (len(images),)
        assert labels.min() >= 0 and labels.max() < classes
    assert ds.image_shape == shape
    assert ds.num_classes == classes


# ----------------------------------------------------------------- writers for tiny files


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fmnist(folder: Path, gz: bool, n_train: int = 12, n_test: int = 5) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        data = _idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return arrays


def _cifar_batch(n: int, label_key: bytes, num_classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_cifar10(root: Path, n: int = 4) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        batches[name] = _cifar_batch(n, b"labels", 10, seed=k)
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


def _write_cifar100(root: Path, n_train: int = 20, n_test: int = 8) -> dict[str, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    batches = {}
    for k, (name, n) in enumerate((("train", n_train), ("test", n_test))):
        batch = _cifar_batch(n, b"fine_labels", 100, seed=10 + k)
        batch[b"coarse_labels"] = [0] * n
        batch[b"labels"] = np.asarray(batch[b"fine_labels"])  # not used; ignore
        batches[name] = batch
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)  # default (newer) protocol
    return batches


def _write_svhn(root: Path, n_train: int = 6, n_test: int = 3) -> dict[str, tuple]:
    rng = np.random.default_rng(1)
    out = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        scipy.io.savemat(root / name, {"X": x, "y": y})
        out[name] = (x, y)
    return out


# ----------------------------------------------------------------- digits and names


def test_digits_shapes_and_fixed_split() -> None:
    ds = load_dataset("digits")
    _assert_contract(ds, (1, 8, 8), 10)
    assert len(ds.train_labels) + len(ds.test_labels) == 1797
    assert 0.24 < len(ds.test_labels) / 1797 < 0.26
    assert ds.train_images.max() == 255
    # stratified: each class ~25 % in test
    test_counts = np.bincount(ds.test_labels, minlength=10)
    all_counts = test_counts + np.bincount(ds.train_labels, minlength=10)
    np.testing.assert_allclose(test_counts / all_counts, 0.25, atol=0.01)
    again = load_dataset("digits", data_dir="/does/not/matter")
    np.testing.assert_array_equal(ds.train_images, again.train_images)
    np.testing.assert_array_equal(ds.test_labels, again.test_labels)
    check_dataset_files("digits")
    assert "digits" in repr(ds) and "1347" in repr(ds)


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        load_dataset("mnist-ish")
    for name in DATASETS:
        assert name in str(info.value)
    with pytest.raises(ConfigError):
        check_dataset_files("nope")


# ----------------------------------------------------------------- fashion-mnist


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    arrays = _write_fmnist(tmp_path, gz=gz)
    check_dataset_files("fashion-mnist", tmp_path)
    ds = load_dataset("fashion-mnist", tmp_path)
    _assert_contract(ds, (1, 28, 28), 10)
    assert len(ds.train_labels) == 12 and len(ds.test_labels) == 5
    np.testing.assert_array_equal(ds.train_images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_torchvision_layout(tmp_path: Path) -> None:
    _write_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion-mnist", str(tmp_path))
    assert ds.train_images.shape == (12, 1, 28, 28)


def test_fashion_mnist_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    for call in (load_dataset, check_dataset_files):
        with pytest.raises(DataError) as info:
            call("fashion-mnist", missing)
        msg = str(info.value)
        assert str(missing) in msg
        assert "train-images-idx3-ubyte" in msg
        assert "apt-get install dataset-fashion-mnist" in msg
        assert "--data-dir" in msg


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_truncated(tmp_path: Path, gz: bool) -> None:
    _write_fmnist(tmp_path, gz=False)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    data = bad.read_bytes()[:-100]
    if gz:
        bad.unlink()
        bad = bad.with_name(bad.name + ".gz")
        data = gzip.compress(data)
    bad.write_bytes(data)
    with pytest.raises(DataError, match="truncated") as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_fashion_mnist_truncated_gzip_stream(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, gz=True)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)


def test_fashion_mnist_bad_magic_and_dtype(tmp_path: Path) -> None:
    _write_fmnist(tmp_path, gz=False)
    bad = tmp_path / "train-labels-idx1-ubyte"
    raw = bytearray(bad.read_bytes())
    raw[2] = 0x0D  # float
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="0x0d") as info:
        load_dataset("fashion-mnist", tmp_path)
    assert str(bad) in str(info.value)
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="magic"):
        load_dataset("fashion-mnist", tmp_path)


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_system_copy() -> None:
    check_dataset_files("fashion-mnist")
    ds = load_dataset("fashion-mnist")
    _assert_contract(ds, (1, 28, 28), 10)
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [6000] * 10)


# ----------------------------------------------------------------- cifar


def test_cifar10_loads(tmp_path: Path) -> None:
    batches = _write_cifar10(tmp_path, n=4)
    check_dataset_files("cifar10", tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    _assert_contract(ds, (3, 32, 32), 10)
    assert ds.train_images.shape == (20, 3, 32, 32)
    assert ds.test_images.shape == (4, 3, 32, 32)
    expected_train = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.train_labels, expected_train)
    # row layout: 1024 red, 1024 green, 1024 blue, each row-major 32x32
    row = batches["test_batch"][b"data"][1]
    np.testing.assert_array_equal(ds.test_images[1, 1], row[1024:2048].reshape(32, 32))


def test_cifar10_accepts_inner_folder(tmp_path: Path) -> None:
    _write_cifar10(tmp_path, n=2)
    ds = load_dataset("cifar10", tmp_path / "cifar-10-batches-py")
    assert len(ds.test_labels) == 2


def test_cifar100_loads_fine_labels(tmp_path: Path) -> None:
    batches = _write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    _assert_contract(ds, (3, 32, 32), 100)
    assert ds.train_images.shape == (20, 3, 32, 32)
    assert ds.test_images.shape == (8, 3, 32, 32)
    np.testing.assert_array_equal(ds.train_labels, batches["train"][b"fine_labels"])


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_required_data_dir(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset(name)
    with pytest.raises(DataError, match="--data-dir"):
        check_dataset_files(name, None)
    missing = tmp_path / "absent"
    with pytest.raises(DataError) as info:
        load_dataset(name, missing)
    msg = str(info.value)
    assert str(missing) in msg and "--data-dir" in msg and "download=True" in msg


def test_cifar_missing_one_batch_named(tmp_path: Path) -> None:
    _write_cifar10(tmp_path, n=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing: data_batch_3") as info:
        check_dataset_files("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a pickle at all", "could not unpickle"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:40], "could not unpickle"),
        (pickle.dumps([1, 2, 3]), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "missing key"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "one label"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), r"\[0, 9\]"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), "uint8"),
    ],
)
def test_cifar_bad_batch(tmp_path: Path, content: bytes, match: str) -> None:
    _write_cifar10(tmp_path, n=2)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        load_dataset("cifar10", tmp_path)
    assert str(bad) in str(info.value)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_refuses_arbitrary_globals(tmp_path: Path, capsys) -> None:
    _write_cifar100(tmp_path)
    bad = tmp_path / "cifar-100-python" / "test"
    bad.write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataError, match="builtins.print") as info:
        load_dataset("cifar100", tmp_path)
    assert str(bad) in str(info.value)
    assert "pwned" not in capsys.readouterr().out


# ----------------------------------------------------------------- svhn


def test_svhn_loads_and_maps_10_to_0(tmp_path: Path) -> None:
    written = _write_svhn(tmp_path, n_train=12, n_test=3)
    check_dataset_files("svhn", tmp_path)
    ds = load_dataset("svhn", tmp_path)
    _assert_contract(ds, (3, 32, 32), 10)
    assert ds.train_images.shape == (12, 3, 32, 32)
    assert ds.test_images.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(ds.train_labels, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2])
    x = written["train_32x32.mat"][0]
    np.testing.assert_array_equal(ds.train_images[4, 2], x[:, :, 2, 4])


def test_svhn_missing_keys(tmp_path: Path) -> None:
    _write_svhn(tmp_path)
    bad = tmp_path / "test_32x32.mat"
    scipy.io.savemat(bad, {"images": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(DataError, match="missing variable") as info:
        load_dataset("svhn", tmp_path)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("how", ["garbage", "truncated", "shape"])
def test_svhn_bad_file(tmp_path: Path, how: str) -> None:
    _write_svhn(tmp_path)
    bad = tmp_path / "train_32x32.mat"
    if how == "garbage":
        bad.write_bytes(b"not a mat file" * 20)
    elif how == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        scipy.io.savemat(bad, {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(DataError) as info:
        load_dataset("svhn", tmp_path)
    assert str(bad) in str(info.value)


def test_svhn_missing_file_named(tmp_path: Path) -> None:
    _write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(DataError, match="missing: test_32x32.mat") as info:
        check_dataset_files("svhn", tmp_path)
    assert str(tmp_path) in str(info.value)
