"""Your own data, no code: an ImageFolder tree (``imagefolder``) or one ``.npz`` file (``npz``).

``imagefolder`` (``--data-dir DIR``)
    torchvision's ImageFolder layout: ``DIR/train/<class>/<image>`` and
    ``DIR/test/<class>/<image>`` (images may sit in sub-folders of a class folder). Image
    files end in ``.png``, ``.jpg``, ``.jpeg`` or ``.bmp`` (any case); hidden files
    (``.DS_Store``) are skipped, any other file is an error. Classes are the class folder
    names, sorted; train and test must have the same class folders. Every image is resized
    (bilinear; non-square images are stretched) to ``image_size`` x ``image_size``; the
    default is the first training image's size (first class folder, first file in sorted
    order), which must then be square. Channels: if every image is grey (Pillow modes
    ``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``) the set has 1 channel, otherwise 3 (RGB;
    grey images are repeated on 3 channels, alpha is dropped, palette images are
    expanded). Images are decoded once per process and kept in memory; with a
    ``cache_dir`` they are also written there as ``imagefolder-<digest>.npz`` (plain
    arrays, read without pickle), keyed by a digest of the file list, sizes and
    modification times and the image size, and read back instead of decoding when
    nothing changed. Nothing is written next to the data.
``npz`` (``--data-dir FILE.npz``)
    Arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (read with
    ``allow_pickle=False``). Images ``(N, H, W)`` (grey), ``(N, H, W, C)`` or ``(N, C, H,
    W)`` with C = 1 or 3. Layout rule: a last axis of 1 or 3 whose first non-batch axis is
    not 1 or 3 means NHWC; anything else is read as NCHW, so the ambiguous shapes (both
    axes 1 or 3, e.g. ``(N, 3, 5, 3)``) are NCHW. ``uint8`` pixels in [0, 255] are kept;
    float pixels must lie in [0, 1] and are stored as ``round(255 x)``. Labels are
    integers in [0, K) with K = the largest label + 1, every class present in the training
    split.

Every problem is one :class:`~genefl.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genefl.data.datasets import ImageDataset, PathArg, _check_labels, _finish
from genefl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Pillow modes counted as grey (everything else makes the data set RGB)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"})
SPLITS = ("train", "test")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: version of the cache file's content (bump when decoding changes)
_CACHE_VERSION = 1
_LAYOUT_HINT = (
    "expected DIR/train/<class>/<images> and DIR/test/<class>/<images> "
    "(torchvision's ImageFolder layout)"
)


# --------------------------------------------------------------------------- imagefolder


@dataclass(frozen=True)
class FolderListing:
    """The image files of an ImageFolder tree, in a fixed order."""

    root: Path
    classes: tuple[str, ...]
    #: per split: (file, label) in class then path order
    files: dict[str, list[tuple[Path, int]]]

    def digest(self, image_size: int, channels: int) -> str:
        """SHA-256 of every file's path, size and modification time and the decoding."""
        h = hashlib.sha256(f"v{_CACHE_VERSION} {image_size} {channels}\n".encode())
        for split in SPLITS:
            for path, label in self.files[split]:
                st = path.stat()
                rel = path.relative_to(self.root).as_posix()
                h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _folder_root(data_dir: PathArg) -> Path:
    if data_dir is None:
        raise DataError(
            f"--dataset imagefolder needs --data-dir DIR: {_LAYOUT_HINT}"
        )
    root = Path(os.fspath(data_dir))
    if not root.is_dir():
        raise DataError(f"--data-dir {root}: no such folder; {_LAYOUT_HINT}")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"{root}: missing {' and '.join(f'{s}/' for s in missing)} folder(s); {_LAYOUT_HINT}"
        )
    return root


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _hidden_part(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def list_folder(data_dir: PathArg) -> FolderListing:
    """List the class folders and image files of ``data_dir`` (no file is opened)."""
    root = _folder_root(data_dir)
    class_sets: dict[str, list[str]] = {}
    for split in SPLITS:
        folder = root / split
        entries = sorted(p for p in folder.iterdir() if _visible(p))
        strays = [p for p in entries if not p.is_dir()]
        if strays:
            raise DataError(
                f"{strays[0]}: a file directly in {folder}/; images go into class folders "
                f"({_LAYOUT_HINT}): move it into its class folder or delete it"
            )
        class_sets[split] = [p.name for p in entries]
        if not entries:
            raise DataError(f"{folder}: no class folders; {_LAYOUT_HINT}")
    if class_sets["train"] != class_sets["test"]:
        only_train = sorted(set(class_sets["train"]) - set(class_sets["test"]))
        only_test = sorted(set(class_sets["test"]) - set(class_sets["train"]))
        raise DataError(
            f"{root}: train/ and test/ must hold the same class folders; only in train/: "
            f"{', '.join(only_train) or 'none'}; only in test/: {', '.join(only_test) or 'none'}"
        )
    classes = tuple(class_sets["train"])
    files: dict[str, list[tuple[Path, int]]] = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(classes):
            folder = root / split / name
            found = sorted(
                p for p in folder.rglob("*")
                if p.is_file() and not _hidden_part(p, folder)
            )
            for p in found:
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DataError(
                        f"{p}: not an image file (names must end in "
                        f"{', '.join(IMAGE_SUFFIXES)}); move it out of {root} or delete it"
                    )
            if not found:
                raise DataError(
                    f"{folder}: class {name!r} has no images in {split}/; add some or remove "
                    "the class from both train/ and test/"
                )
            files[split].extend((p, label) for p in found)
    return FolderListing(root, classes, files)


def _unreadable(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path}: not a readable image ({type(exc).__name__}: {exc}); replace it with a "
        "valid PNG/JPEG/BMP file or delete it"
    )


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """``(Pillow mode, (width, height))`` from the file's header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size
    except Exception as exc:  # a third-party decoder on arbitrary bytes: any error = bad file
        raise _unreadable(path, exc) from exc


def folder_geometry(
    listing: FolderListing, image_size: int | None
) -> tuple[int, int]:
    """``(channels, image_size)`` from the images' headers (no pixel is decoded)."""
    modes = set()
    first_size = None
    for split in SPLITS:
        for path, _ in listing.files[split]:
            mode, size = _probe(path)
            modes.add(mode)
            if first_size is None:
                first_size, first_path = size, path
    channels = 1 if modes <= GREY_MODES else 3
    if image_size is None:
        w, h = first_size
        if w != h:
            raise DataError(
                f"{first_path}: the first training image is {w}x{h}, not square, so it "
                "cannot set the image size; pass --image-size N to resize every image to NxN"
            )
        image_size = w
    return channels, int(image_size)


def _decode(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image as ``(channels, image_size, image_size)`` uint8."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: a truncated file fails here
            if channels == 1:
                im = im.convert("L")
            else:
                if im.mode in ("P", "PA"):
                    im = im.convert("RGBA")
                im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # a third-party decoder on arbitrary bytes: any error = bad file
        raise _unreadable(path, exc) from exc
    return arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))


def _decode_all(
    listing: FolderListing, image_size: int, channels: int
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        pairs = listing.files[split]
        images = np.empty((len(pairs), channels, image_size, image_size), dtype=np.uint8)
        for i, (path, _) in enumerate(pairs):
            images[i] = _decode(path, image_size, channels)
        out[f"x_{split}"] = images
        out[f"y_{split}"] = np.array([label for _, label in pairs], dtype=np.int64)
    return out


def _read_cache(path: Path, listing: FolderListing, image_size: int, channels: int):
    """The cached arrays if ``path`` holds a complete, matching cache, else ``None``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in NPZ_KEYS}
    except Exception:  # missing, partial or foreign file: decode again and rewrite it
        return None
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        n = len(listing.files[split])
        if x.shape != (n, channels, image_size, image_size) or x.dtype != np.uint8:
            return None
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise DataError(
            f"--cache-dir {path.parent}: cannot write the image cache ({exc.strerror or exc}); "
            "choose a writable folder or leave --cache-dir out (memory only)"
        ) from exc


#: the last decoded folder of this process: "<folder>\0<digest>" -> data set
_MEMORY: dict[str, ImageDataset] = {}


def load_imagefolder(
    data_dir: PathArg, image_size: int | None = None, cache_dir: PathArg = None
) -> ImageDataset:
    """Decode (or read from memory or ``cache_dir``) an ImageFolder tree."""
    listing = list_folder(data_dir)
    channels, size = folder_geometry(listing, image_size)
    digest = listing.digest(size, channels)
    key = f"{listing.root.resolve()}\0{digest}"
    if key in _MEMORY:
        return _MEMORY[key]
    cache = None if cache_dir is None else Path(os.fspath(cache_dir)) / (
        f"imagefolder-{digest[:32]}.npz"
    )
    arrays = _read_cache(cache, listing, size, channels) if cache is not None else None
    if arrays is None:
        arrays = _decode_all(listing, size, channels)
        if cache is not None:
            _write_cache(cache, arrays)
    dataset = _finish(
        "imagefolder", (arrays["x_train"], arrays["y_train"]),
        (arrays["x_test"], arrays["y_test"]), len(listing.classes),
    )
    _MEMORY.clear()
    _MEMORY[key] = dataset
    return dataset


def imagefolder_shape(
    data_dir: PathArg, image_size: int | None = None
) -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` from the folder names and image headers."""
    listing = list_folder(data_dir)
    channels, size = folder_geometry(listing, image_size)
    return (channels, size, size), len(listing.classes)


# --------------------------------------------------------------------------- npz


def npz_path(data_dir: PathArg) -> Path:
    """The .npz file named by ``data_dir`` or a DataError saying what is expected."""
    if data_dir is None:
        raise DataError(
            "--dataset npz needs --data-dir FILE.npz: one file with the arrays "
            f"{', '.join(NPZ_KEYS)} (numpy.savez)"
        )
    path = Path(os.fspath(data_dir))
    if not path.is_file():
        raise DataError(
            f"--data-dir {path}: no such file; --dataset npz reads one .npz file with the "
            f"arrays {', '.join(NPZ_KEYS)} (numpy.savez)"
        )
    return path


def _npz_error(path: Path, exc: BaseException) -> DataError:
    return DataError(
        f"{path}: not a readable .npz file ({type(exc).__name__}: {exc}); write it with "
        f"numpy.savez(FILE, {'=..., '.join(NPZ_KEYS)}=...) from plain numeric arrays"
    )


def _read_npz(path: Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:  # zip/npy parsing of arbitrary bytes: any error = bad file
        raise _npz_error(path, exc) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path}: a single .npy array, not an .npz archive; save the arrays "
            f"{', '.join(NPZ_KEYS)} with numpy.savez"
        )
    with archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)} (found: "
                f"{', '.join(archive.files) or 'none'}); save {', '.join(NPZ_KEYS)} with "
                "numpy.savez"
            )
        try:
            return {k: archive[k] for k in keys}
        except Exception as exc:  # a damaged member: any error = bad file
            raise _npz_error(path, exc) from exc


def npz_layout(shape: tuple[int, ...]) -> str:
    """``"NHWC"`` or ``"NCHW"`` of a 4-d image array shape (the module docstring's rule)."""
    return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"


def _npz_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    """``x`` as uint8 ``(N, C, H, W)``, checked."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if npz_layout(x.shape) == "NHWC":
            x = np.transpose(x, (0, 3, 1, 2))
    else:
        raise DataError(
            f"{path}: {key!r} has shape {x.shape}; images must be (N, H, W), (N, H, W, C) "
            "or (N, C, H, W)"
        )
    if x.shape[1] not in (1, 3):
        raise DataError(
            f"{path}: {key!r} has shape {x.shape} as (N, C, H, W): {x.shape[1]} channels; "
            "images need 1 (grey) or 3 (RGB) channels, as the last axis (NHWC) or the "
            "second (NCHW)"
        )
    if x.shape[0] == 0 or min(x.shape[2:]) < 1:
        raise DataError(f"{path}: {key!r} holds no images, or empty ones (shape {x.shape})")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise DataError(
                f"{path}: {key!r} is float, so its pixels must be finite and in [0, 1]; "
                "found NaN or inf"
            )
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{path}: {key!r} is float, so its pixels must be finite and in [0, 1]; "
                f"found [{x.min()}, {x.max()}] (scale them, or store uint8 0..255)"
            )
        return np.round(x.astype(np.float64) * 255.0).astype(np.uint8)
    raise DataError(
        f"{path}: {key!r} has dtype {x.dtype}; store images as uint8 (0..255) or float "
        "(0..1)"
    )


def _npz_labels(y: np.ndarray, n: int, path: Path, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(
            f"{path}: {key!r} must hold one label per image ({n}), got shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise DataError(f"{path}: {key!r} must be integers, got dtype {y.dtype}")
    return _check_labels(y, np.iinfo(np.int64).max, path, repr(key))


def _num_classes(y_train: np.ndarray, y_test: np.ndarray, path: Path) -> int:
    k = int(max(y_train.max(), y_test.max())) + 1
    absent = np.setdiff1d(np.arange(k), y_train)
    if absent.size:
        raise DataError(
            f"{path}: labels must be 0..K-1 with every class in 'y_train'; K = {k} (largest "
            f"label + 1) but class(es) {', '.join(map(str, absent[:10].tolist()))} have no "
            "training images; renumber the labels"
        )
    return k


def load_npz(data_dir: PathArg) -> ImageDataset:
    """Load the four arrays of an .npz file (see the module docstring)."""
    path = npz_path(data_dir)
    arrays = _read_npz(path, NPZ_KEYS)
    splits = []
    for split in SPLITS:
        x = _npz_images(arrays[f"x_{split}"], path, f"x_{split}")
        y = _npz_labels(arrays[f"y_{split}"], len(x), path, f"y_{split}")
        splits.append((x, y))
    if splits[0][0].shape[1:] != splits[1][0].shape[1:]:
        raise DataError(
            f"{path}: train images are (C, H, W) = {splits[0][0].shape[1:]} but test images "
            f"{splits[1][0].shape[1:]}; both splits need the same image shape"
        )
    k = _num_classes(splits[0][1], splits[1][1], path)
    return _finish("npz", splits[0], splits[1], k)


def _npy_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(d) for d in shape), dtype


def npz_shape(data_dir: PathArg) -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` from ``x_train``'s header and the labels."""
    path = npz_path(data_dir)
    labels = _read_npz(path, ("y_train", "y_test"))
    try:
        with zipfile.ZipFile(path) as zf:
            shape, _ = _npy_header(zf, "x_train")
    except Exception as exc:  # zip/npy parsing of arbitrary bytes: any error = bad file
        raise _npz_error(path, exc) from exc
    if len(shape) == 3:
        chw = (1, shape[1], shape[2])
    elif len(shape) == 4:
        n, a, b, c = shape
        chw = (c, a, b) if npz_layout(shape) == "NHWC" else (a, b, c)
    else:
        raise DataError(f"{path}: 'x_train' has shape {shape}; images must be 3-d or 4-d")
    y_train = _npz_labels(labels["y_train"], len(labels["y_train"]), path, "y_train")
    y_test = _npz_labels(labels["y_test"], len(labels["y_test"]), path, "y_test")
    if y_train.size == 0 or y_test.size == 0:
        raise DataError(f"{path}: 'y_train' and 'y_test' need at least one label each")
    return chw, _num_classes(y_train, y_test, path)
