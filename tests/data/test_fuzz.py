"""Issue 4: generated configs and corrupted data files give a clean error or a valid
result, never an unhandled exception (property-based, hypothesis)."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
from conftest import make_dataset
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_datasets import _write_cifar10, _write_fmnist, _write_svhn
from test_own import write_folder, write_npz

from genefl.algorithms.registry import algorithm_names, get_algorithm_class
from genefl.config import RunConfig, resolve
from genefl.data.datasets import ImageDataset, dataset_shape, load_dataset
from genefl.engine.simulation import validate_protocol
from genefl.errors import ConfigError, DataError

OPTION_NAMES = sorted(
    {f.name for f in fields(RunConfig)}
    | {f.name for m in algorithm_names() for f in fields(get_algorithm_class(m).params_cls)}
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["genefl", "fedavg", "digits", "cifar10", "shard", "dirichlet", "cpu",
                     "cuda:7", "1e-3", "nan", "inf", "-0", "0x10", "1_000", " 5 ", "true"]),
    st.lists(st.integers(), max_size=3),
)
KEYS = st.one_of(st.sampled_from(OPTION_NAMES), st.text(min_size=1, max_size=10))
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_generated_configs_resolve_or_fail_cleanly(values: dict) -> None:
    try:
        config, params = resolve(values, {}, "fuzz")
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip()
        return
    # a valid config is really valid: floats finite (only the norm bound may be inf)
    for obj in (config, params):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if isinstance(value, float) and f.name != "max_update_ratio":
                assert math.isfinite(value), f.name


@FAST
@given(st.dictionaries(st.sampled_from(OPTION_NAMES), st.text(max_size=8), max_size=5))
def test_generated_command_line_strings_resolve_or_fail_cleanly(values: dict) -> None:
    """Option values as the command line delivers them: strings."""
    try:
        resolve({}, values, "the command line")
    except ConfigError:
        pass


TOY: ImageDataset = make_dataset(num_classes=6, per_class=30, test_per_class=8)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 60), m=st.integers(1, 60), k=st.integers(1, 8),
    per_round=st.integers(1, 10), partition=st.sampled_from(["shard", "dirichlet"]),
    shards=st.integers(1, 12), beta=st.floats(1e-3, 100),
    val=st.floats(0, 0.5), fraction=st.floats(0.01, 1.0),
)
def test_protocols_against_the_data_validate_or_fail_cleanly(
    n, m, k, per_round, partition, shards, beta, val, fraction
) -> None:
    values = dict(known_clients=n, agnostic_clients=m, clusters=k, clients_per_round=per_round,
                  partition=partition, shards=shards, beta=beta, val_fraction=val,
                  train_fraction=fraction)
    try:
        config, _ = resolve(values, {}, "fuzz")
        validate_protocol(config, TOY)
    except ConfigError as exc:
        assert str(exc)


def _corrupt(data: bytes, how: str, position: float, byte: int) -> bytes:
    cut = int(position * len(data))
    if how == "truncate":
        return data[:cut]
    if how == "flip":
        i = min(cut, len(data) - 1)
        return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :]
    if how == "garbage":
        return bytes([byte]) * max(1, cut)
    if how == "empty":
        return b""
    return data + bytes([byte]) * 7  # "append"


CORRUPTION = st.tuples(
    st.sampled_from(["truncate", "flip", "garbage", "empty", "append"]),
    st.floats(0, 1), st.integers(0, 255),
)


def _check_load(name: str, root: Path) -> None:
    try:
        ds = load_dataset(name, root)
    except DataError as exc:
        assert str(exc)
        return
    assert ds.train_images.shape[0] == ds.train_labels.shape[0]
    assert ds.train_labels.max() < ds.num_classes


def _fuzz_files(name: str, write, which: int, corruption) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        write(root)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        target = files[which % len(files)]
        target.write_bytes(_corrupt(target.read_bytes(), *corruption))
        _check_load(name, root)
    finally:
        shutil.rmtree(root)


@settings(max_examples=120, deadline=None)
@given(gz=st.booleans(), which=st.integers(0, 3), corruption=CORRUPTION)
def test_corrupted_fashion_mnist_files_fail_cleanly(gz, which, corruption) -> None:
    _fuzz_files("fashion-mnist", lambda r: _write_fmnist(r, gz=gz), which, corruption)


@settings(max_examples=80, deadline=None)
@given(which=st.integers(0, 5), corruption=CORRUPTION)
def test_corrupted_cifar10_files_fail_cleanly(which, corruption) -> None:
    _fuzz_files("cifar10", lambda r: _write_cifar10(r, n=2), which, corruption)


@settings(max_examples=60, deadline=None)
@given(which=st.integers(0, 1), corruption=CORRUPTION)
def test_corrupted_svhn_files_fail_cleanly(which, corruption) -> None:
    _fuzz_files("svhn", lambda r: _write_svhn(r), which, corruption)


@settings(max_examples=40, deadline=None)
@given(which=st.integers(0, 10**4), corruption=CORRUPTION)
def test_corrupted_imagefolder_files_fail_cleanly(which, corruption) -> None:
    _fuzz_files("imagefolder", lambda r: write_folder(r, n_train=2, n_test=1), which, corruption)


@settings(max_examples=40, deadline=None)
@given(layout=st.sampled_from(["NCHW", "NHWC", "NHW"]), corruption=CORRUPTION)
def test_corrupted_npz_file_fails_cleanly(layout, corruption) -> None:
    root = Path(tempfile.mkdtemp())
    try:
        path = write_npz(root / "d.npz", layout)
        path.write_bytes(_corrupt(path.read_bytes(), *corruption))
        _check_load("npz", path)
        try:
            dataset_shape("npz", path)
        except DataError as exc:
            assert str(exc)
    finally:
        shutil.rmtree(root)


@settings(max_examples=60, deadline=None)
@given(
    tail=st.one_of(
        st.sampled_from([(2, 2), (1, 2, 2), (3, 2, 2), (2, 2, 3), (2, 2, 1), (3, 2, 3)]),
        st.lists(st.sampled_from([0, 1, 2, 3, 4]), max_size=4).map(tuple),
    ),
    match=st.sampled_from([True, True, False]),
    dtype=st.sampled_from(["uint8", "float32", "uint8", "float64", "int16", "bool"]),
    scale=st.sampled_from([1.0, 1.0, 255.0, -1.0, float("nan")]),
    y=st.one_of(st.integers(1, 3).map(lambda k: [*range(k), 0]),
                st.lists(st.integers(-1, 3), max_size=6)),
    same_test=st.booleans(),
)
def test_generated_npz_arrays_load_or_fail_cleanly(tail, match, dtype, scale, y,
                                                   same_test) -> None:
    """Arrays of any shape, dtype, range and labels: a valid data set or one DataError."""
    rng = np.random.default_rng(0)
    x_shape = ((len(y) if match else 2),) + tail
    with np.errstate(invalid="ignore"):
        x = (rng.random(x_shape) * scale).astype(dtype) if dtype != "bool" else (
            rng.random(x_shape) > 0.5)
    y_train = np.asarray(y, dtype=np.int64)
    arrays = {"x_train": x, "y_train": y_train, "x_test": x,
              "y_test": y_train if same_test else np.zeros_like(y_train)}
    root = Path(tempfile.mkdtemp())
    try:
        np.savez(root / "d.npz", **arrays)
        try:
            ds = load_dataset("npz", root / "d.npz")
        except DataError as exc:
            assert str(root / "d.npz") in str(exc)
            event("DataError")
            return
        event("loaded")
        assert ds.train_images.dtype == np.uint8 and ds.train_images.shape[1] in (1, 3)
        assert dataset_shape("npz", root / "d.npz") == (ds.image_shape, ds.num_classes)
        assert set(np.unique(ds.train_labels)) == set(range(ds.num_classes))
    finally:
        shutil.rmtree(root)
