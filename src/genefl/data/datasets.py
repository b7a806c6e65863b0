"""Image classification data sets as plain uint8 numpy arrays.

Every loader returns an :class:`ImageDataset` whose images are C-contiguous
``uint8`` arrays of shape ``(N, C, H, W)`` and whose labels are ``int64``
arrays of shape ``(N,)`` with values in ``[0, num_classes)``.

Supported data sets (see :data:`DATASETS`):

``digits``
    scikit-learn's bundled 8x8 digits (1797 images, 1 channel, 10 classes).
    The 0..16 pixel values are scaled to 0..255 with ``round(v * 255 / 16)``.
    The data set has no official train/test split, so genefl defines one as
    part of the data set: a stratified split with 25 % of every class
    (rounded to the nearest integer) in the test set, drawn with
    ``numpy.random.default_rng(0)``. It is the same for every run and does not
    depend on the run's seed. ``data_dir`` is ignored.
``fashion-mnist``
    The four IDX files (plain or ``.gz``) in ``data_dir``, in
    ``data_dir/FashionMNIST/raw`` (torchvision's layout) or, when no
    ``data_dir`` is given, in :data:`DEFAULT_FASHION_MNIST_DIR` (where the
    Debian package ``dataset-fashion-mnist`` installs them).
``cifar10`` / ``cifar100``
    The python-pickle batches of the official archives, as torchvision
    extracts them: ``data_dir/cifar-10-batches-py/`` and
    ``data_dir/cifar-100-python/`` (fine labels, 100 classes). ``data_dir``
    may also be that inner folder itself.
``svhn``
    ``data_dir/train_32x32.mat`` and ``data_dir/test_32x32.mat`` (cropped
    digits); label 10 stands for the digit 0 and is mapped to 0.
``imagefolder`` / ``npz``
    Your own images: an ImageFolder tree or one ``.npz`` file (:mod:`genefl.data.own`
    documents the layouts, the resizing, the channel rule and the cache).

Missing, truncated or malformed files raise :class:`~genefl.errors.DataError`
with a message naming the file and saying how to fix it.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genefl.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "DEFAULT_FASHION_MNIST_DIR",
    "ImageDataset",
    "check_dataset_files",
    "load_dataset",
]

#: Names accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = (
    "digits", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder", "npz",
)

#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fixed parameters of the ``digits`` train/test split (part of the data set definition).
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0

PathArg = str | os.PathLike | None


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification data set with a fixed train/test split.

    Images are C-contiguous ``uint8`` arrays ``(N, C, H, W)``; labels are
    ``int64`` arrays ``(N,)`` with values in ``[0, num_classes)``. Instances
    compare by identity (comparing arrays element-wise is not meaningful here).
    """

    name: str
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    num_classes: int

    def __post_init__(self) -> None:
        """Check the array contract (dtypes, shapes, label range)."""
        if int(self.num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(f"{split}_images must be a uint8 array of shape (N, C, H, W)")
            if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
                raise ValueError(f"{split}_labels must be an int64 array of shape (N,)")
            if len(images) != len(labels):
                raise ValueError(
                    f"{split}: {len(images)} images but {len(labels)} labels"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"{split}_labels must lie in [0, {self.num_classes})")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"train images {self.train_images.shape[1:]} and test images "
                f"{self.test_images.shape[1:]} differ in shape"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    def __repr__(self) -> str:
        """Summarise the data set without printing the arrays."""
        c, h, w = self.image_shape
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.train_labels)}, "
            f"test={len(self.test_labels)}, image_shape=({c}, {h}, {w}), "
            f"num_classes={self.num_classes})"
        )


def _canonical_name(name: str) -> str:
    """Return the canonical data set name or raise :class:`ConfigError`."""
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ConfigError(
            f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}"
        )
    return key


def _finish(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
) -> ImageDataset:
    """Build an :class:`ImageDataset` with contiguous, writable, correctly typed arrays."""

    def images(a: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(a, dtype=np.uint8)
        return out if out.flags.writeable else out.copy()

    def labels(a: np.ndarray) -> np.ndarray:
        out = np.ascontiguousarray(a, dtype=np.int64).reshape(-1)
        return out if out.flags.writeable else out.copy()

    return ImageDataset(
        name=name,
        train_images=images(train[0]),
        train_labels=labels(train[1]),
        test_images=images(test[0]),
        test_labels=labels(test[1]),
        num_classes=num_classes,
    )


def _check_labels(labels: np.ndarray, num_classes: int, path: Path, what: str) -> np.ndarray:
    """Return ``labels`` as int64 or raise :class:`DataError` if out of range."""
    if labels.size == 0:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.number) or not np.all(
            np.isfinite(labels) & (labels == np.round(labels))
        ):
            raise DataError(f"{path}: {what} are not integers (dtype {labels.dtype})")
    lo, hi = labels.min(), labels.max()
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"{path}: {what} must lie in [0, {num_classes - 1}], found values in [{lo}, {hi}]"
        )
    return labels.astype(np.int64)


# --------------------------------------------------------------------------- digits


def _load_digits() -> ImageDataset:
    """Load scikit-learn's digits with genefl's fixed stratified split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images, dtype=np.float64) * 255.0 / 16.0)
    images = np.clip(images, 0, 255).astype(np.uint8)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(idx[: int(round(DIGITS_TEST_FRACTION * len(idx)))])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    return _finish(
        "digits",
        (images[~test_mask], labels[~test_mask]),
        (images[test_mask], labels[test_mask]),
        10,
    )


# --------------------------------------------------------------------------- fashion-mnist

_FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _fmnist_dirs(data_dir: PathArg) -> list[Path]:
    """Return the folders searched for the Fashion-MNIST IDX files, in order."""
    base = Path(DEFAULT_FASHION_MNIST_DIR if data_dir is None else os.fspath(data_dir))
    return [base, base / "FashionMNIST" / "raw"]


def _find_in_dir(folder: Path, stem: str) -> Path | None:
    """Return ``folder/stem`` or ``folder/stem.gz``, whichever exists (plain first)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _fmnist_paths(data_dir: PathArg) -> list[Path]:
    """Locate the four Fashion-MNIST IDX files or raise :class:`DataError`."""
    dirs = _fmnist_dirs(data_dir)
    for folder in dirs:
        found = [_find_in_dir(folder, stem) for stem in _FMNIST_FILES]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    where = " or ".join(str(d) for d in dirs)
    files = ", ".join(f"{stem}[.gz]" for stem in _FMNIST_FILES)
    hint = (
        "install the Debian package with `apt-get install dataset-fashion-mnist` "
        f"(it puts them in {DEFAULT_FASHION_MNIST_DIR}), or pass --data-dir to a folder "
        "with the IDX files, e.g. torchvision's FashionMNIST/raw "
        "(`torchvision.datasets.FashionMNIST(root=DIR, download=True)` on a machine "
        "with internet access, then --data-dir DIR)"
    )
    raise DataError(
        f"Fashion-MNIST not found: expected the IDX files {files} in {where}. To get them, {hint}."
    )


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently decompressing ``.gz``; errors become :class:`DataError`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        kind = "corrupt or truncated gzip file" if path.suffix == ".gz" else "unreadable file"
        raise DataError(f"{path}: {kind} ({exc})") from exc


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with ``ndim`` dimensions."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no header)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    if raw[2] != 0x08:
        raise DataError(
            f"{path}: unsupported IDX data type code 0x{raw[2]:02x} (expected 0x08, unsigned byte)"
        )
    if raw[3] != ndim:
        raise DataError(f"{path}: IDX file has {raw[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file (header cut off after {len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(raw) - header
    if actual < expected:
        raise DataError(
            f"{path}: truncated IDX file: header says shape {dims} ({expected} bytes of data) "
            f"but only {actual} bytes follow"
        )
    if actual > expected:
        raise DataError(
            f"{path}: IDX size mismatch: header says shape {dims} ({expected} bytes of data) "
            f"but {actual} bytes follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


def _load_fashion_mnist(data_dir: PathArg) -> ImageDataset:
    """Load Fashion-MNIST from IDX files."""
    tr_img_p, tr_lab_p, te_img_p, te_lab_p = _fmnist_paths(data_dir)
    splits = []
    for img_p, lab_p in ((tr_img_p, tr_lab_p), (te_img_p, te_lab_p)):
        images = _parse_idx(img_p, 3)
        labels = _parse_idx(lab_p, 1)
        if len(images) != len(labels):
            raise DataError(
                f"{img_p} holds {len(images)} images but {lab_p} holds {len(labels)} labels"
            )
        splits.append((images[:, None, :, :], _check_labels(labels, 10, lab_p, "labels")))
    if splits[0][0].shape[2:] != splits[1][0].shape[2:]:
        raise DataError(
            f"{tr_img_p} images are {splits[0][0].shape[2:]} but {te_img_p} images are "
            f"{splits[1][0].shape[2:]}"
        )
    return _finish("fashion-mnist", splits[0], splits[1], 10)


# --------------------------------------------------------------------------- cifar


@dataclass(frozen=True)
class _CifarSpec:
    """Layout of one CIFAR archive."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    tv_class: str


_CIFAR = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        num_classes=10,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tv_class="CIFAR10",
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        num_classes=100,
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        tv_class="CIFAR100",
    ),
}

# Globals a CIFAR batch pickle may reference: numpy array reconstruction only.
_PICKLE_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals a CIFAR batch needs.

    The CIFAR archives are distributed as pickles; restricting ``find_class``
    means a tampered file cannot run arbitrary code when loaded.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve allowed globals, mapping ``numpy.core`` to ``numpy._core`` when present."""
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refers to {module}.{name}, which a CIFAR batch never contains"
            )
        if module.startswith("numpy.core."):
            try:
                return super().find_class(module.replace("numpy.core.", "numpy._core.", 1), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
    OSError,
)


def _cifar_dir(spec: _CifarSpec, data_dir: PathArg) -> Path:
    """Return the folder holding the batches (``DIR/<folder>``, or ``DIR`` itself)."""
    if data_dir is None:
        raise DataError(_cifar_missing_message(spec, None, []))
    base = Path(os.fspath(data_dir))
    inner = base / spec.folder
    names = spec.train_files + spec.test_files
    if not inner.is_dir() and all((base / n).is_file() for n in names):
        return base
    return inner


def _cifar_missing_message(spec: _CifarSpec, folder: Path | None, missing: list[str]) -> str:
    """Explain which CIFAR files were expected where and how to obtain them."""
    names = ", ".join(spec.train_files + spec.test_files)
    if folder is None:
        head = f"{spec.title} needs a data directory (none was given): expected the files {names}"
        where = f"in DIR/{spec.folder}/"
    else:
        head = f"{spec.title} not found: expected the files {names}"
        where = f"in {folder}/ (missing: {', '.join(missing)})"
    root = "DIR" if folder is None else str(folder.parent)
    return (
        f"{head} {where}. To get them, run "
        f"`python -c \"import torchvision; torchvision.datasets.{spec.tv_class}"
        f"(root='{root}', download=True)\"` on a machine with internet access, or download "
        f"{spec.url} and extract it into {root}; then pass --data-dir {root}."
    )


def _cifar_paths(spec: _CifarSpec, data_dir: PathArg) -> tuple[list[Path], list[Path]]:
    """Locate the CIFAR batch files or raise :class:`DataError`."""
    folder = _cifar_dir(spec, data_dir)
    names = spec.train_files + spec.test_files
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(_cifar_missing_message(spec, folder, missing))
    return [folder / n for n in spec.train_files], [folder / n for n in spec.test_files]


def _dict_get(batch: dict, key: str) -> Any:
    """Look up ``key`` as bytes (original archives) or str (re-pickled files)."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def _load_cifar_batch(path: Path, spec: _CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR batch pickle as ``(images (N,3,32,32), labels (N,))``."""
    try:
        with path.open("rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
    except _PICKLE_ERRORS as exc:
        raise DataError(
            f"{path}: not a valid {spec.title} batch (could not unpickle: "
            f"{type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(
            f"{path}: not a valid {spec.title} batch (expected a dict, got {type(batch).__name__})"
        )
    data = _dict_get(batch, "data")
    labels = _dict_get(batch, spec.label_key)
    missing = [k for k, v in (("data", data), (spec.label_key, labels)) if v is None]
    if missing:
        keys = ", ".join(repr(k) for k in list(batch)[:10])
        raise DataError(
            f"{path}: not a valid {spec.title} batch (missing key(s) "
            f"{', '.join(missing)}; found {keys or 'no keys'})"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        got = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array, got {got}")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must have shape (N, 3072), got {data.shape}")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError) as exc:  # ragged or odd objects
        raise DataError(f"{path}: {spec.label_key!r} is not a list of integers") from exc
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(
            f"{path}: {spec.label_key!r} must hold one label per image "
            f"({len(data)}), got shape {labels.shape}"
        )
    labels = _check_labels(labels, spec.num_classes, path, repr(spec.label_key))
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(key: str, data_dir: PathArg) -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 from the python-pickle batches."""
    spec = _CIFAR[key]
    train_paths, test_paths = _cifar_paths(spec, data_dir)

    def load(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_load_cifar_batch(p, spec) for p in paths]
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
        )

    return _finish(key, load(train_paths), load(test_paths), spec.num_classes)


# --------------------------------------------------------------------------- svhn

_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def _svhn_paths(data_dir: PathArg) -> list[Path]:
    """Locate the SVHN .mat files or raise :class:`DataError`."""
    names = " and ".join(_SVHN_FILES)
    how = (
        "run `python -c \"import torchvision; "
        "[torchvision.datasets.SVHN(root='{root}', split=s, download=True) "
        "for s in ('train', 'test')]\"` on a machine with internet access, or download "
        f"{_SVHN_URL}train_32x32.mat and {_SVHN_URL}test_32x32.mat into {{root}}; "
        "then pass --data-dir {root}."
    )
    if data_dir is None:
        raise DataError(
            f"SVHN needs a data directory (none was given): expected the files {names} "
            f"in DIR/. To get them, {how.format(root='DIR')}"
        )
    folder = Path(os.fspath(data_dir))
    paths = [folder / n for n in _SVHN_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"SVHN not found: expected the files {names} in {folder}/ "
            f"(missing: {', '.join(missing)}). To get them, {how.format(root=folder)}"
        )
    return paths


def _load_svhn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load one SVHN .mat file as ``(images (N,3,32,32), labels (N,))``."""
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except (
        MatReadError,
        ValueError,
        TypeError,
        OSError,
        EOFError,
        IndexError,
        KeyError,
        NotImplementedError,
        UnicodeDecodeError,
        zlib.error,
        MemoryError,
    ) as exc:
        raise DataError(
            f"{path}: not a readable SVHN .mat file ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(
            f"{path}: not a valid SVHN file (missing variable(s) {', '.join(missing)}; "
            f"found {', '.join(found) or 'none'})"
        )
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: 'X' must have shape (32, 32, 3, N), got {x.shape}")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: 'X' must be uint8, got {x.dtype}")
    n = x.shape[3]
    if y.size != n or sum(d != 1 for d in y.shape) > 1:
        raise DataError(f"{path}: 'y' must hold one label per image ({n}), got shape {y.shape}")
    y = y.reshape(-1)
    if y.size and np.issubdtype(y.dtype, np.number):
        y = np.where(y == 10, 0, y)
    labels = _check_labels(y, 10, path, "labels 'y' (1..10, 10 meaning digit 0)")
    return np.transpose(x, (3, 2, 0, 1)), labels


def _load_svhn(data_dir: PathArg) -> ImageDataset:
    """Load SVHN (cropped digits, 32x32) from the official .mat files."""
    train_p, test_p = _svhn_paths(data_dir)
    return _finish("svhn", _load_svhn_file(train_p), _load_svhn_file(test_p), 10)


# --------------------------------------------------------------------------- public API


def check_dataset_files(name: str, data_dir: PathArg = None) -> None:
    """Check cheaply that the files of data set ``name`` exist, without reading them.

    Raises the same :class:`DataError` as :func:`load_dataset` would for missing
    files (and :class:`ConfigError` for an unknown name), so a run can fail
    before any work starts.
    """
    from genefl.data import own

    key = _canonical_name(name)
    if key == "digits":
        return
    if key == "imagefolder":
        own.list_folder(data_dir)
    elif key == "npz":
        own.npz_path(data_dir)
    elif key == "fashion-mnist":
        _fmnist_paths(data_dir)
    elif key in _CIFAR:
        _cifar_paths(_CIFAR[key], data_dir)
    else:
        _svhn_paths(data_dir)


#: image shape ``(C, H, W)`` and class count of each built-in data set, known without its
#: files (a federation's server builds the model from these; tests check them against loads)
SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),
    "fashion-mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
}


def dataset_shape(
    name: str, data_dir: PathArg = None, image_size: int | None = None
) -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` of data set ``name`` without loading its pixels.

    Fixed for the built-in sets; for ``imagefolder`` read from the folder names and the
    image headers, for ``npz`` from ``x_train``'s header and the labels.
    """
    from genefl.data import own

    key = _canonical_name(name)
    if key == "imagefolder":
        return own.imagefolder_shape(data_dir, image_size)
    if key == "npz":
        return own.npz_shape(data_dir)
    return SHAPES[key]


def load_dataset(
    name: str,
    data_dir: PathArg = None,
    image_size: int | None = None,
    cache_dir: PathArg = None,
) -> ImageDataset:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``data_dir``.

    ``data_dir`` is ignored for ``digits``, optional for ``fashion-mnist``
    (default :data:`DEFAULT_FASHION_MNIST_DIR`) and required for the others (for
    ``npz`` it is the file). ``image_size`` and ``cache_dir`` are used by
    ``imagefolder`` only. Raises :class:`ConfigError` for an unknown name and
    :class:`DataError` for missing or malformed files.
    """
    from genefl.data import own

    key = _canonical_name(name)
    loaders: dict[str, Callable[[], ImageDataset]] = {
        "digits": _load_digits,
        "fashion-mnist": lambda: _load_fashion_mnist(data_dir),
        "cifar10": lambda: _load_cifar("cifar10", data_dir),
        "cifar100": lambda: _load_cifar("cifar100", data_dir),
        "svhn": lambda: _load_svhn(data_dir),
        "imagefolder": lambda: own.load_imagefolder(data_dir, image_size, cache_dir),
        "npz": lambda: own.load_npz(data_dir),
    }
    return loaders[key]()


def subsample_train(
    dataset: ImageDataset, fraction: float, rng: np.random.Generator
) -> ImageDataset:
    """The data set with ``fraction`` of each class's training images (at least one per
    class, drawn without replacement, original order kept); the test split is unchanged.
    """
    if fraction >= 1.0:
        return dataset
    keep = []
    for c in range(dataset.num_classes):
        idx = np.flatnonzero(dataset.train_labels == c)
        if idx.size:
            n = max(1, int(round(fraction * idx.size)))
            keep.append(rng.choice(idx, size=n, replace=False))
    index = np.sort(np.concatenate(keep))
    return ImageDataset(
        dataset.name, dataset.train_images[index], dataset.train_labels[index],
        dataset.test_images, dataset.test_labels, dataset.num_classes,
    )
