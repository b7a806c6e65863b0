"""GENE-FL's two regularisers change what a client learns (issue 10: they were inert).

The same small federation (toy data, 6 known clients all training every round, 2 known
rounds) is trained four times: both terms at the paper's weights (lambda1 = 0.5,
lambda2 = 0.05), each alone, and neither. Every client's trained model must differ from
the no-regulariser run by far more than float noise, and ``L_gen`` must bring the clients
closer to their cluster model, which is what it is for.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_dataset

from genefl.callbacks.base import Callback
from genefl.config import resolve
from genefl.engine.simulation import prepare_simulation

SETTINGS = {
    "both": {},
    "gen_only": {"lambda2": 0.0},
    "elg_only": {"lambda1": 0.0},
    "neither": {"lambda1": 0.0, "lambda2": 0.0},
}


def _train(**overrides: float) -> dict:
    config, params = resolve({}, {
        "method": "genefl", "known_clients": 6, "agnostic_clients": 6, "clusters": 2,
        "known_rounds": 2, "agnostic_rounds": 0, "clients_per_round": 6, "local_epochs": 1,
        "batch_size": 16, "shards": 2, "device": "cpu", **overrides,
    })
    sim = prepare_simulation(config, params, dataset=make_dataset())
    received: dict[int, dict[str, torch.Tensor]] = {}
    elg_losses: list[float] = []
    real_received = sim.engine.fed.received

    def spy(client_id, phase):  # what each client pulls toward
        got = real_received(client_id, phase)
        received[client_id] = {k: v.clone() for k, v in got.items()}
        return got

    class Losses(Callback):
        def on_client_end(self, record) -> None:
            elg_losses.append(record.metrics.get("loss_elg", math.nan))

    sim.engine.fed.received = spy  # type: ignore[method-assign]
    sim.engine.callbacks.callbacks.append(Losses())
    sim.engine.run_phase("known", sim.known_ids, config.known_rounds, config.clients_per_round)
    models = {cid: dict(sim.engine.store.get(cid).params) for cid in sim.known_ids}
    sim.close()
    return {"models": models, "received": received, "elg": elg_losses}


@pytest.fixture(scope="module")
def runs() -> dict[str, dict]:
    return {name: _train(**kw) for name, kw in SETTINGS.items()}


def _max_difference(a: dict, b: dict) -> float:
    return max(
        float((a[c][k] - b[c][k]).abs().max())
        for c in a for k in a[c] if a[c][k].is_floating_point()
    )


def _distance_to_received(run: dict) -> float:
    """Sum over clients of ||theta - Theta_k|| over the parameters the client pulled
    toward in its last round."""
    total = 0.0
    for cid, model in run["models"].items():
        anchor = run["received"][cid]
        sq = sum(float(((model[k] - anchor[k]) ** 2).sum())
                 for k in anchor if "running" not in k and "num_batches" not in k)
        total += math.sqrt(sq)
    return total


@pytest.mark.parametrize("setting", ["both", "gen_only", "elg_only"])
def test_each_regulariser_changes_the_trained_models(runs: dict, setting: str) -> None:
    gap = _max_difference(runs[setting]["models"], runs["neither"]["models"])
    assert gap > 1e-3, f"{setting}: trained models equal the lambda = 0 run (gap {gap:.2e})"


def test_l_gen_pulls_clients_toward_their_cluster_model(runs: dict) -> None:
    free = _distance_to_received(runs["neither"])
    pulled = _distance_to_received(runs["gen_only"])
    assert pulled < 0.9 * free, (pulled, free)


def test_l_elg_is_active_at_the_defaults(runs: dict) -> None:
    """Some high-Fisher entries are constrained and differ from the cluster model: the
    elastic term is positive for clients past their first round."""
    assert max(runs["elg_only"]["elg"]) > 0.0
    assert max(runs["neither"]["elg"]) > 0.0  # measured even when its weight is 0
