"""The round loop with every registered algorithm, on a toy data set."""

from __future__ import annotations

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


def _cnn_layers() -> dict:
    from genefl.models import build_model, list_layers
    from genefl.seeding import torch_generator

    model = build_model("cnn", 1, 6, 8, torch_generator(0))
    return {layer.name: layer for layer in list_layers(model)}


def test_genefl_upload_bytes_match_chosen_layers_and_gamma_trace() -> None:
    """Each client uploads exactly ``gamma`` layers of the round, counted to the byte; the
    per-round gamma is the schedule's trace replayed from the recorded validation
    accuracies (start = all layers, floor ceil(0.2 * 10) = 2, step 1, tolerance 0.02,
    patience 3, window 3); the agnostic phase keeps the last gamma."""
    from genefl.method.condense import GammaSchedule

    results, rec = run("genefl", known_rounds=6, gamma_floor=0.2)
    layers = _cnn_layers()
    gamma_of = {r.round: r.gamma for r in rec.rounds}
    for c in rec.clients:
        assert c.upload_bytes == sum(layers[n].nbytes for n in c.upload_layers)
        if not c.diverged:
            assert len(c.upload_layers) == gamma_of[c.round]
    assert results["upload_bytes"] < results["full_model_upload_bytes"]
    replay = GammaSchedule(start=len(layers), floor=2, step=1, tolerance=0.02, patience=3,
                           window=3)
    known = [r for r in rec.rounds if r.phase == "known"]
    for r in known:
        assert r.gamma == replay.gamma, [x.gamma for x in rec.rounds]
        replay.update(r.val_accuracy)
    assert all(r.gamma == replay.gamma for r in rec.rounds if r.phase == "agnostic")


def test_gamma_shrinks_to_the_floor_when_accuracy_holds() -> None:
    """With a tolerance of 1 every round holds: gamma = 10, 9, ..., then stays at the
    floor ceil(0.5 * 10) = 5, and uploads shrink with it."""
    results, rec = run("genefl", known_rounds=7, gamma_floor=0.5, gamma_tolerance=1.0)
    gammas = [r.gamma for r in rec.rounds if r.phase == "known"]
    assert gammas == [10, 9, 8, 7, 6, 5, 5]
    uploads = results["known_round_upload_bytes"]
    assert uploads[-1] < uploads[0]


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


def test_learning_above_chance_on_toy_data() -> None:
    results, _ = run("fedavg", local_epochs=3, known_rounds=3)
    # each known client holds 2 of the 3 known classes: chance is at most 1/2
    assert results["known_accuracy"] > 0.8


def test_dirichlet_partition_runs() -> None:
    results, _ = run("genefl", partition="dirichlet", beta=0.5)
    assert np.isfinite(results["known_accuracy"])
