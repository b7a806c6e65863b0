from __future__ import annotations

import numpy as np
import pytest

from genefl.data.partition import (
    client_class_counts,
    dirichlet_partition,
    dirichlet_proportions,
    shard_partition,
    shard_proportions,
    split_by_proportions,
)
from genefl.errors import ConfigError


def _labels(num_classes: int = 10, per_class: int = 50, seed: int = 123) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(num_classes), per_class)).astype(np.int64)


def _assert_valid_partition(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert p.ndim == 1
        assert np.all(np.diff(p) > 0), "sorted, no duplicates within a client"
        if p.size:
            assert p.min() >= 0 and p.max() < n
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "clients are disjoint"


# ----------------------------------------------------------------- proportions


@pytest.mark.parametrize(
    ("num_clients", "num_classes", "shards"),
    [(10, 10, 2), (7, 10, 3), (3, 10, 2), (20, 10, 1), (5, 4, 9), (1, 10, 10), (4, 100, 5)],
)
def test_shard_proportions_structure(num_clients: int, num_classes: int, shards: int) -> None:
    props = shard_proportions(num_clients, num_classes, shards, np.random.default_rng(0))
    assert props.shape == (num_clients, num_classes)
    s = min(shards, num_classes)
    assert np.all((props > 0).sum(axis=1) == s)
    col = props.sum(axis=0)
    held = (props > 0).any(axis=0)
    np.testing.assert_allclose(col[held], 1.0)
    assert np.all(col[~held] == 0)
    # equal split among holders, and balanced class use (holder counts differ by <= 1)
    holders = (props > 0).sum(axis=0)
    for c in np.flatnonzero(held):
        np.testing.assert_allclose(props[props[:, c] > 0, c], 1.0 / holders[c])
    assert holders.max() - holders.min() <= 1


def test_shard_proportions_all_classes_when_enough_clients() -> None:
    props = shard_proportions(5, 10, 2, np.random.default_rng(1))
    assert np.all((props > 0).sum(axis=0) == 1)


def test_dirichlet_proportions_columns_sum_to_one() -> None:
    for beta in (0.01, 0.1, 0.5, 100.0):
        props = dirichlet_proportions(8, 10, beta, np.random.default_rng(3))
        assert props.shape == (8, 10)
        assert np.all(props >= 0)
        np.testing.assert_allclose(props.sum(axis=0), 1.0)
    one = dirichlet_proportions(1, 5, 0.5, np.random.default_rng(0))
    np.testing.assert_allclose(one, 1.0)


@pytest.mark.parametrize(
    "call",
    [
        lambda r: shard_proportions(0, 10, 2, r),
        lambda r: shard_proportions(5, 10, 0, r),
        lambda r: shard_proportions(5, 0, 2, r),
        lambda r: shard_proportions(2.5, 10, 2, r),
        lambda r: dirichlet_proportions(5, 10, 0.0, r),
        lambda r: dirichlet_proportions(5, 10, -1.0, r),
        lambda r: dirichlet_proportions(5, 10, float("nan"), r),
        lambda r: dirichlet_proportions(0, 10, 0.5, r),
        lambda r: shard_partition(_labels(), 0, 2, r),
        lambda r: dirichlet_partition(_labels(), 3, 0.0, r),
        lambda r: dirichlet_partition(_labels(), 3, 0.5, r, min_samples=-1),
    ],
)
def test_invalid_arguments_raise_config_error(call) -> None:
    with pytest.raises(ConfigError):
        call(np.random.default_rng(0))


# ----------------------------------------------------------------- split_by_proportions


def test_split_uses_every_sample_once_when_columns_sum_to_one() -> None:
    labels = _labels(num_classes=3, per_class=7)
    # thirds are not exactly representable: rounding must neither lose nor duplicate
    props = np.full((3, 3), 1.0 / 3.0)
    parts = split_by_proportions(labels, [0, 1, 2], props, np.random.default_rng(0))
    _assert_valid_partition(parts, len(labels))
    assert sum(len(p) for p in parts) == len(labels)
    assert sorted(len(p) for p in parts) == [6, 6, 9]  # floor cuts at 2, 4, 7 per class


def test_split_never_duplicates_with_awkward_fractions() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=997)
    for _ in range(50):
        props = rng.random((6, 4))
        props /= props.sum(axis=0) * rng.uniform(1.0, 1.3)  # columns sum to <= 1
        parts = split_by_proportions(labels, [0, 1, 2, 3], props, rng)
        _assert_valid_partition(parts, len(labels))
        assert sum(len(p) for p in parts) <= len(labels)


def test_split_maps_columns_to_global_classes() -> None:
    labels = np.array([5, 5, 7, 7, 7, 9, 9, 9, 9])
    props = np.array([[1.0, 0.0], [0.0, 1.0]])  # client 0 <- class 9, client 1 <- class 5
    parts = split_by_proportions(labels, [9, 5], props, np.random.default_rng(0))
    np.testing.assert_array_equal(parts[0], [5, 6, 7, 8])
    np.testing.assert_array_equal(parts[1], [0, 1])  # class 7 is in no column: unused


def test_split_rejects_bad_proportions() -> None:
    labels = _labels(num_classes=2, per_class=5)
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError):
        split_by_proportions(labels, [0, 1], np.full((2, 2), 0.7), rng)  # sums > 1
    with pytest.raises(ConfigError):
        split_by_proportions(labels, [0, 1], np.ones((2, 3)), rng)  # wrong shape
    with pytest.raises(ConfigError):
        split_by_proportions(labels, [0, 1], -np.ones((2, 2)), rng)


# ----------------------------------------------------------------- shard_partition


@pytest.mark.parametrize(("num_clients", "shards"), [(10, 2), (7, 3), (20, 1), (4, 10)])
def test_shard_partition_classes_per_client(num_clients: int, shards: int) -> None:
    labels = _labels(num_classes=10, per_class=60)
    parts = shard_partition(labels, num_clients, shards, np.random.default_rng(0))
    assert len(parts) == num_clients
    _assert_valid_partition(parts, len(labels))
    counts = client_class_counts(labels, parts, 10)
    assert np.all((counts > 0).sum(axis=1) == min(shards, 10))
    if num_clients * min(shards, 10) >= 10:
        assert counts.sum() == len(labels)  # every class held, every sample used


def test_shard_partition_more_shards_than_classes_gives_all_classes() -> None:
    labels = _labels(num_classes=4, per_class=30)
    parts = shard_partition(labels, 3, 9, np.random.default_rng(0))
    counts = client_class_counts(labels, parts, 4)
    assert np.all(counts > 0)
    assert counts.sum() == len(labels)


def test_shard_partition_explicit_classes_subset() -> None:
    labels = _labels(num_classes=10, per_class=20)
    parts = shard_partition(labels, 4, 2, np.random.default_rng(0), classes=[0, 1, 2, 3])
    counts = client_class_counts(labels, parts, 10)
    assert counts[:, 4:].sum() == 0
    assert np.all((counts > 0).sum(axis=1) == 2)


def test_shard_partition_determinism() -> None:
    labels = _labels()
    a = shard_partition(labels, 10, 2, np.random.default_rng(42))
    b = shard_partition(labels, 10, 2, np.random.default_rng(42))
    c = shard_partition(labels, 10, 2, np.random.default_rng(43))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ----------------------------------------------------------------- dirichlet_partition


def test_dirichlet_partition_valid_and_min_samples() -> None:
    labels = _labels(num_classes=10, per_class=50)
    for beta, min_samples in ((0.1, 5), (0.5, 10), (10.0, 20)):
        parts = dirichlet_partition(
            labels, 10, beta, np.random.default_rng(0), min_samples=min_samples
        )
        assert len(parts) == 10
        _assert_valid_partition(parts, len(labels))
        assert min(len(p) for p in parts) >= min_samples
        # columns sum to 1 -> every sample used (up to float slack: at most none lost)
        assert sum(len(p) for p in parts) == len(labels)


def test_dirichlet_partition_determinism() -> None:
    labels = _labels()
    a = dirichlet_partition(labels, 8, 0.3, np.random.default_rng(7))
    b = dirichlet_partition(labels, 8, 0.3, np.random.default_rng(7))
    c = dirichlet_partition(labels, 8, 0.3, np.random.default_rng(8))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_partition_impossible_raises() -> None:
    labels = _labels(num_classes=10, per_class=5)  # 50 samples
    with pytest.raises(ConfigError, match="clients"):
        dirichlet_partition(labels, 10, 0.5, np.random.default_rng(0), min_samples=6)
    with pytest.raises(ConfigError, match="raise beta"):
        dirichlet_partition(
            labels, 20, 0.001, np.random.default_rng(0), min_samples=2, max_tries=5
        )


def test_client_class_counts() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    counts = client_class_counts(labels, [np.array([0, 3]), np.array([1, 2, 4, 5])], 4)
    np.testing.assert_array_equal(counts, [[1, 0, 1, 0], [0, 2, 2, 0]])
    assert counts.dtype == np.int64
