"""Issue 4: generated configs and corrupted data files give a clean error or a valid
result, never an unhandled exception (property-based, hypothesis)."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

from conftest import make_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_datasets import _write_cifar10, _write_fmnist, _write_svhn

from genefl.algorithms.registry import algorithm_names, get_algorithm_class
from genefl.config import RunConfig, resolve
from genefl.data.datasets import ImageDataset, load_dataset
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
