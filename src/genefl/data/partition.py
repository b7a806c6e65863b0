"""Non-IID partitions of a labelled data set among federated clients.

All functions are pure: randomness comes only from the
:class:`numpy.random.Generator` passed in, so the same generator state gives
the same partition. A partition is a list with one sorted ``int64`` array of
sample indices per client; clients never share a sample.

Two label-skew schemes are provided:

* *shards* (pathological non-IID): every client holds exactly
  ``min(shards, num_classes)`` distinct classes, see :func:`shard_proportions`;
* *Dirichlet*: for every class, the client fractions are drawn from
  ``Dir(beta * 1)``; small ``beta`` means strong skew, see
  :func:`dirichlet_proportions`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from genefl.errors import ConfigError

__all__ = [
    "client_class_counts",
    "dirichlet_partition",
    "dirichlet_proportions",
    "shard_partition",
    "shard_proportions",
    "split_by_proportions",
]

# Slack absorbing floating-point error in cumulative proportions (never creates duplicates:
# cut points are clipped to the class size and made non-decreasing).
_EPS = 1e-6


def _positive_int(value: object, what: str) -> int:
    """Return ``value`` as an int >= 1 or raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_rng(rng: object) -> np.random.Generator:
    """Return ``rng`` if it is a numpy Generator, else raise ``TypeError``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a 1-D integer array or raise ``ValueError``."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"labels must be a 1-D integer array, got shape {arr.shape} {arr.dtype}")
    return arr


def _classes(labels: np.ndarray, classes: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Return the class ids to partition (default: the labels present, sorted)."""
    if classes is None:
        return np.unique(labels)
    arr = np.asarray(classes)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"classes must be a 1-D sequence of integers, got {classes!r}")
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"classes must be distinct, got {arr.tolist()}")
    return arr


def shard_proportions(
    num_clients: int, num_classes: int, shards: int, rng: np.random.Generator
) -> np.ndarray:
    """Return a ``(num_clients, num_classes)`` matrix of class fractions for sharding.

    Client ``i`` holds exactly ``s = min(shards, num_classes)`` distinct classes:
    with ``perm`` a random permutation of the classes, it takes
    ``perm[(i * s + j) % num_classes]`` for ``j < s``, so every class is used by
    the same number of clients (up to one). Each class is split equally among
    the clients holding it: entry ``[i, c]`` is the fraction of class ``c``'s
    samples given to client ``i``; a column sums to 1 if some client holds the
    class, else to 0 (possible when ``num_clients * s < num_classes``).
    """
    num_clients = _positive_int(num_clients, "number of clients")
    num_classes = _positive_int(num_classes, "number of classes")
    shards = _positive_int(shards, "shards (classes per client)")
    rng = _check_rng(rng)
    s = min(shards, num_classes)
    perm = rng.permutation(num_classes)
    held = np.zeros((num_clients, num_classes), dtype=bool)
    for i in range(num_clients):
        held[i, perm[(i * s + np.arange(s)) % num_classes]] = True
    holders = held.sum(axis=0)
    return np.where(held, 1.0 / np.maximum(holders, 1), 0.0)


def dirichlet_proportions(
    num_clients: int, num_classes: int, beta: float, rng: np.random.Generator
) -> np.ndarray:
    """Return a ``(num_clients, num_classes)`` matrix whose columns are ``Dir(beta * 1)`` draws.

    Entry ``[i, c]`` is the fraction of class ``c``'s samples given to client
    ``i``; every column sums to 1.
    """
    num_clients = _positive_int(num_clients, "number of clients")
    num_classes = _positive_int(num_classes, "number of classes")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not (
        math.isfinite(beta) and beta > 0
    ):
        raise ConfigError(f"Dirichlet beta must be a finite number > 0, got {beta!r}")
    rng = _check_rng(rng)
    draws = rng.dirichlet(np.full(num_clients, float(beta)), size=num_classes)
    props = np.ascontiguousarray(draws.T, dtype=np.float64)
    # Guard against degenerate draws (all-zero/NaN columns for extremely small beta).
    bad = ~np.isfinite(props).all(axis=0) | (props.sum(axis=0) <= 0)
    for c in np.flatnonzero(bad):
        props[:, c] = 0.0
        props[rng.integers(num_clients), c] = 1.0
    return props / props.sum(axis=0, keepdims=True)


def split_by_proportions(
    labels: np.ndarray,
    classes: Sequence[int] | np.ndarray,
    proportions: np.ndarray,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Split sample indices among clients according to per-class fractions.

    ``labels`` are the global labels; column ``j`` of ``proportions`` (shape
    ``(num_clients, len(classes))``) gives the fractions of class
    ``classes[j]``. For each class in turn, its sample indices are shuffled
    and cut at ``floor(n * cumsum(fractions))``, so every sample goes to at
    most one client (samples of a column summing to less than 1, and of labels
    not in ``classes``, are left out). Returns one sorted ``int64`` index array
    per client.
    """
    labels = _check_labels(labels)
    cls = _classes(labels, classes)
    rng = _check_rng(rng)
    props = np.asarray(proportions, dtype=np.float64)
    if props.ndim != 2 or props.shape[1] != len(cls) or props.shape[0] < 1:
        raise ConfigError(
            f"proportions must have shape (num_clients >= 1, {len(cls)}), got {props.shape}"
        )
    if not np.isfinite(props).all() or (props < 0).any():
        raise ConfigError("proportions must be finite and non-negative")
    if (props.sum(axis=0) > 1 + _EPS).any():
        raise ConfigError("proportions of each class (column) must sum to at most 1")
    num_clients = props.shape[0]
    per_client: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for j, c in enumerate(cls):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        cuts = np.floor(np.cumsum(props[:, j]) * n + _EPS).astype(np.int64)
        cuts = np.maximum.accumulate(np.clip(cuts, 0, n))
        bounds = np.concatenate(([0], cuts))
        for i in range(num_clients):
            if bounds[i + 1] > bounds[i]:
                per_client[i].append(idx[bounds[i] : bounds[i + 1]])
    return [
        np.sort(np.concatenate(chunks)).astype(np.int64, copy=False)
        if chunks
        else np.empty(0, dtype=np.int64)
        for chunks in per_client
    ]


def shard_partition(
    labels: np.ndarray,
    num_clients: int,
    shards: int,
    rng: np.random.Generator,
    classes: Sequence[int] | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Partition ``labels`` so that every client holds ``min(shards, #classes)`` classes.

    ``classes`` defaults to ``np.unique(labels)``. See :func:`shard_proportions`.
    """
    labels = _check_labels(labels)
    cls = _classes(labels, classes)
    if len(cls) == 0:
        raise ConfigError("cannot partition an empty label set")
    props = shard_proportions(num_clients, len(cls), shards, rng)
    return split_by_proportions(labels, cls, props, rng)


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    beta: float,
    rng: np.random.Generator,
    classes: Sequence[int] | np.ndarray | None = None,
    min_samples: int = 1,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Partition ``labels`` with per-class ``Dir(beta)`` client fractions.

    Proportions are redrawn until every client has at least ``min_samples``
    samples; after ``max_tries`` failed draws a :class:`ConfigError` asks to
    raise ``beta`` or lower the number of clients. ``classes`` defaults to
    ``np.unique(labels)``.
    """
    labels = _check_labels(labels)
    cls = _classes(labels, classes)
    num_clients = _positive_int(num_clients, "number of clients")
    max_tries = _positive_int(max_tries, "max_tries")
    if isinstance(min_samples, bool) or not isinstance(min_samples, numbers.Integral) or (
        min_samples < 0
    ):
        raise ConfigError(f"min_samples must be an integer >= 0, got {min_samples!r}")
    if len(cls) == 0:
        raise ConfigError("cannot partition an empty label set")
    available = int(np.isin(labels, cls).sum())
    if num_clients * min_samples > available:
        raise ConfigError(
            f"cannot give each of {num_clients} clients at least {min_samples} samples: "
            f"only {available} samples in total; lower the number of clients"
        )
    for _ in range(max_tries):
        props = dirichlet_proportions(num_clients, len(cls), beta, rng)
        parts = split_by_proportions(labels, cls, props, rng)
        if min(len(p) for p in parts) >= min_samples:
            return parts
    raise ConfigError(
        f"no Dirichlet(beta={beta}) partition of {available} samples among {num_clients} "
        f"clients gave every client at least {min_samples} samples in {max_tries} tries; "
        "raise beta or lower the number of clients"
    )


def client_class_counts(
    labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Return a ``(len(parts), num_classes)`` int64 matrix of per-client class counts."""
    labels = _check_labels(labels)
    num_classes = _positive_int(num_classes, "number of classes")
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for i, part in enumerate(parts):
        lab = labels[np.asarray(part, dtype=np.int64)]
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), found {lab.min()}..{lab.max()}"
            )
        counts[i] = np.bincount(lab, minlength=num_classes)
    return counts
