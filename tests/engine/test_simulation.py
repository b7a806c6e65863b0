"""The round loop with every registered algorithm, on a toy data set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_dataset

from genefl.algorithms.registry import algorithm_names
from genefl.callbacks.base import Callback, ClientRoundRecord, RoundRecord
from genefl.config import resolve
from genefl.engine.simulation import run_simulation

QUICK = dict(
    known_clients=6, agnostic_clients=6, clusters=2, known_rounds=2, agnostic_rounds=2,
    clients_per_round=3, local_epochs=1, batch_size=16, shards=2, device="cpu",
)


class Recorder(Callback):
    def __init__(self) -> None:
        self.clients: list[ClientRoundRecord] = []
        self.rounds: list[RoundRecord] = []

    def on_client_end(self, record: ClientRoundRecord) -> None:
        self.clients.append(record)

    def on_round_end(self, record: RoundRecord) -> None:
        self.rounds.append(record)


def run(method: str, dataset=None, **overrides):
    config, params = resolve({}, {**QUICK, "method": method, **overrides})
    rec = Recorder()
    results = run_simulation(config, params, [rec], dataset=dataset or make_dataset())
    return results, rec


@pytest.mark.parametrize("method", algorithm_names())
def test_every_algorithm_runs_two_rounds_per_phase(method: str) -> None:
    """Contract: every registered algorithm completes both phases with sane numbers."""
    results, rec = run(method)
    assert [r.phase for r in rec.rounds] == ["known"] * 2 + ["agnostic"] * 2
    assert len(rec.clients) == 4 * QUICK["clients_per_round"]
    assert 0.0 <= results["known_accuracy"] <= 1.0
    assert 0.0 <= results["agnostic_accuracy_round0"] <= 1.0
    assert results["upload_bytes"] <= results["full_model_upload_bytes"]
    # the counters are the sums of what each client reported
    known = [c for c in rec.clients if c.phase == "known"]
    assert results["upload_bytes"] == sum(c.upload_bytes for c in known)
    assert results["download_bytes"] == sum(c.download_bytes for c in known)
    agn = [c for c in rec.clients if c.phase == "agnostic"]
    assert results["upload_bytes_agnostic"] == sum(c.upload_bytes for c in agn)
    assert sum(c.joined for c in agn) == results["agnostic_joined"]


def test_fedavg_bytes_are_rounds_times_clients_times_model() -> None:
    results, rec = run("fedavg")
    expected = QUICK["known_rounds"] * QUICK["clients_per_round"] * results["model_bytes"]
    assert results["upload_bytes"] == expected
    assert results["download_bytes"] == expected
    assert results["full_model_upload_bytes"] == expected
    assert results["learngene_bytes"] == results["model_bytes"]


def test_local_exchanges_nothing() -> None:
    results, _ = run("local")
    assert results["upload_bytes"] == results["download_bytes"] == 0
    assert results["init_bytes_total"] == 0


def test_genefl_upload_bytes_match_chosen_layers_and_shrink() -> None:
    from genefl.models import build_model, list_layers
    from genefl.seeding import torch_generator

    results, rec = run("genefl", known_rounds=4, gamma_floor=0.2)
    layers = {
        layer.name: layer
        for layer in list_layers(build_model("cnn", 1, 6, 8, torch_generator(0)))
    }
    for c in rec.clients:
        assert c.upload_bytes == sum(layers[n].nbytes for n in c.upload_layers)
    assert results["upload_bytes"] < results["full_model_upload_bytes"]
    gammas = [r.gamma for r in rec.rounds]
    assert gammas[0] == len(layers)  # the schedule starts from all layers


def test_joiner_download_is_not_double_counted() -> None:
    """A FedAvg joiner gets the whole model at init and nothing more that round."""
    results, rec = run("fedavg")
    for c in rec.clients:
        if c.joined:
            assert c.init_bytes == results["model_bytes"]
            assert c.download_bytes == 0


def test_same_seed_same_results_and_different_seed_differs() -> None:
    a, _ = run("genefl")
    b, _ = run("genefl")
    c, _ = run("genefl", seed=1)
    keys = ["known_accuracy", "agnostic_accuracy_round0", "upload_bytes", "download_bytes"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["known_round_accuracy"] == b["known_round_accuracy"]
    assert [a[k] for k in keys] != [c[k] for k in keys] or (
        a["known_round_accuracy"] != c["known_round_accuracy"]
    )


def test_agnostic_clients_join_nearest_cluster_and_counts_grow() -> None:
    results, rec = run("genefl", agnostic_rounds=3)
    assert sum(results["cluster_sizes"]) == QUICK["known_clients"]
    assert results["agnostic_joined"] >= QUICK["clients_per_round"]
    assert results["signature_bytes"] > 0
    assert not math.isnan(results["agnostic_accuracy_last10"])


def test_learning_above_chance_on_toy_data() -> None:
    results, _ = run("fedavg", local_epochs=3, known_rounds=3)
    # each known client holds 2 of the 3 known classes: chance is at most 1/2
    assert results["known_accuracy"] > 0.8


def test_dirichlet_partition_runs() -> None:
    results, _ = run("genefl", partition="dirichlet", beta=0.5)
    assert np.isfinite(results["known_accuracy"])
