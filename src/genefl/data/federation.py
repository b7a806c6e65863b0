"""The DAFL federation (SPEC §1): known/agnostic class split and per-client parts.

Classes are split 50/50 (seeded) into known and agnostic halves. ``N`` known clients
partition the known classes' samples and ``M`` agnostic clients the agnostic classes'
samples, by sharding or Dirichlet proportions. Each client's *test* part is cut from the
data set's test split with the same per-class proportions as its train part, so its
test accuracy is measured on its own label distribution. A share of each train part is
held out for validation (used by schedules, never the test split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genefl.data.datasets import ImageDataset
from genefl.data.partition import dirichlet_proportions, shard_proportions, split_by_proportions
from genefl.errors import ConfigError


@dataclass(frozen=True)
class ClientSplit:
    """Index arrays of one client into the data set's train and test splits."""

    client_id: int
    group: str  # "known" or "agnostic"
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def num_train(self) -> int:
        """Samples the client trains on."""
        return int(self.train.size)


@dataclass(frozen=True)
class Federation:
    """All clients of a run; known client ids come first, then agnostic ones."""

    known_classes: tuple[int, ...]
    agnostic_classes: tuple[int, ...]
    known: list[ClientSplit]
    agnostic: list[ClientSplit]
    notes: list[str] = field(default_factory=list)


def split_classes(num_classes: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Seeded 50/50 split of class ids into (known, agnostic), each sorted."""
    if num_classes < 2:
        raise ConfigError("a data set needs at least 2 classes to split known/agnostic")
    perm = rng.permutation(num_classes)
    half = num_classes // 2
    return sorted(int(c) for c in perm[:half]), sorted(int(c) for c in perm[half:])


def _proportions(
    partition: str, num_clients: int, num_classes: int, shards: int, beta: float,
    rng: np.random.Generator,
) -> np.ndarray:
    if partition == "shard":
        return shard_proportions(num_clients, num_classes, shards, rng)
    if partition == "dirichlet":
        return dirichlet_proportions(num_clients, num_classes, beta, rng)
    raise ConfigError(f"--partition must be shard or dirichlet; got {partition!r}")


def _group(
    dataset: ImageDataset,
    group: str,
    classes: Sequence[int],
    num_clients: int,
    first_id: int,
    partition: str,
    shards: int,
    beta: float,
    val_fraction: float,
    rng: np.random.Generator,
    max_tries: int = 100,
) -> list[ClientSplit]:
    option = "--known-clients" if group == "known" else "--agnostic-clients"
    for _ in range(max_tries):
        props = _proportions(partition, num_clients, len(classes), shards, beta, rng)
        train_parts = split_by_proportions(dataset.train_labels, classes, props, rng)
        test_parts = split_by_proportions(dataset.test_labels, classes, props, rng)
        if all(p.size >= 2 for p in train_parts) and all(p.size >= 1 for p in test_parts):
            break
        if partition == "shard":
            break  # deterministic sizes: redrawing cannot help
    else:
        train_parts = test_parts = []  # unreachable in practice; reported below
    empty = [i for i, p in enumerate(train_parts) if p.size < 2]
    empty_test = [i for i, p in enumerate(test_parts) if p.size < 1]
    if not train_parts or empty or empty_test:
        raise ConfigError(
            f"{option} {num_clients} is too many for {dataset.name}'s {group} classes: "
            f"{len(empty) or len(empty_test)} client(s) would get fewer than 2 training or "
            f"no test samples; lower {option}"
            + (" or raise --beta" if partition == "dirichlet" else "")
        )
    clients = []
    for i, (train, test) in enumerate(zip(train_parts, test_parts)):
        shuffled = rng.permutation(train)
        n_val = int(round(val_fraction * train.size))
        if val_fraction > 0 and train.size >= 4:
            n_val = max(1, n_val)
        n_val = min(n_val, train.size - 2)
        clients.append(
            ClientSplit(
                client_id=first_id + i,
                group=group,
                train=np.sort(shuffled[n_val:]),
                val=np.sort(shuffled[:n_val]),
                test=np.sort(test),
            )
        )
    return clients


def federation_notes(
    dataset_name: str, known_classes: Sequence[int], agnostic_classes: Sequence[int],
    partition: str, shards: int,
) -> list[str]:
    """Remarks on the protocol (a shard count larger than a half's classes)."""
    notes = []
    for name, classes in (("known", known_classes), ("agnostic", agnostic_classes)):
        if partition == "shard" and shards > len(classes):
            notes.append(
                f"--shards {shards} exceeds the {len(classes)} {name} classes of "
                f"{dataset_name}: each {name} client holds all {len(classes)} of them"
            )
    return notes


def build_federation(
    dataset: ImageDataset,
    known_clients: int,
    agnostic_clients: int,
    partition: str,
    shards: int,
    beta: float,
    val_fraction: float,
    rng: np.random.Generator,
) -> Federation:
    """Split classes and partition both halves into clients (all draws from ``rng``)."""
    known_classes, agnostic_classes = split_classes(dataset.num_classes, rng)
    notes = federation_notes(dataset.name, known_classes, agnostic_classes, partition, shards)
    known = _group(
        dataset, "known", known_classes, known_clients, 0, partition, shards, beta,
        val_fraction, rng,
    )
    agnostic = _group(
        dataset, "agnostic", agnostic_classes, agnostic_clients, known_clients, partition,
        shards, beta, val_fraction, rng,
    )
    return Federation(tuple(known_classes), tuple(agnostic_classes), known, agnostic, notes)
