from __future__ import annotations

import numpy as np
import pytest
from conftest import make_dataset

from genefl.data.datasets import load_dataset
from genefl.data.federation import build_federation
from genefl.errors import ConfigError


def _fed(partition="shard", shards=2, known=5, agnostic=4, seed=0, dataset=None):
    ds = dataset or make_dataset(num_classes=6, per_class=60, test_per_class=20)
    fed = build_federation(ds, known, agnostic, partition, shards, 0.5, 0.2,
                           np.random.default_rng(seed))
    return ds, fed


@pytest.mark.parametrize("partition", ["shard", "dirichlet"])
def test_samples_disjoint_and_classes_split(partition: str) -> None:
    ds, fed = _fed(partition)
    assert set(fed.known_classes).isdisjoint(fed.agnostic_classes)
    assert sorted(fed.known_classes + fed.agnostic_classes) == list(range(ds.num_classes))
    clients = fed.known + fed.agnostic
    train = np.concatenate([np.concatenate([c.train, c.val]) for c in clients])
    test = np.concatenate([c.test for c in clients])
    assert len(train) == len(set(train.tolist()))  # every train sample at most once
    assert len(test) == len(set(test.tolist()))
    for c in fed.known:
        assert set(ds.train_labels[c.train]) <= set(fed.known_classes)
        assert set(ds.test_labels[c.test]) <= set(fed.known_classes)
    for c in fed.agnostic:
        assert set(ds.train_labels[c.train]) <= set(fed.agnostic_classes)
    assert [c.client_id for c in clients] == list(range(len(clients)))


def test_shard_gives_exactly_s_classes_and_test_matches_train() -> None:
    ds, fed = _fed("shard", shards=2)
    for c in fed.known + fed.agnostic:
        classes = set(ds.train_labels[np.concatenate([c.train, c.val])].tolist())
        assert len(classes) == 2
        assert set(ds.test_labels[c.test].tolist()) == classes


def test_shards_above_half_use_all_classes_with_a_note() -> None:
    ds, fed = _fed("shard", shards=5)  # each half has 3 classes
    assert fed.notes and "holds all 3" in fed.notes[0]
    for c in fed.known:
        assert len(set(ds.train_labels[c.train].tolist())) == 3


def test_validation_is_carved_from_train() -> None:
    ds, fed = _fed()
    for c in fed.known:
        assert c.val.size >= 1
        assert set(c.val.tolist()).isdisjoint(c.train.tolist())


def test_seeded() -> None:
    _, a = _fed(seed=3)
    _, b = _fed(seed=3)
    _, c = _fed(seed=4)
    assert all(np.array_equal(x.train, y.train) for x, y in zip(a.known, b.known))
    assert a.known_classes == b.known_classes
    assert any(not np.array_equal(x.train, y.train) for x, y in zip(a.known, c.known)) or (
        a.known_classes != c.known_classes
    )


def test_too_many_clients_is_a_config_error() -> None:
    ds = make_dataset(num_classes=4, per_class=6, test_per_class=2)
    with pytest.raises(ConfigError, match="--known-clients"):
        build_federation(ds, 50, 2, "shard", 2, 0.5, 0.1, np.random.default_rng(0))


def test_digits_federation_default_scale() -> None:
    ds = load_dataset("digits")
    fed = build_federation(ds, 20, 20, "shard", 4, 0.5, 0.1, np.random.default_rng(0))
    assert len(fed.known) == 20 and len(fed.agnostic) == 20
    assert all(c.test.size > 0 for c in fed.known + fed.agnostic)
