"""The two evaluation views (personalised and server) and the scoring of every client."""

from __future__ import annotations

import math

import pytest
from conftest import make_dataset
from test_simulation import QUICK, Recorder

from genefl.config import resolve
from genefl.engine.local import evaluate
from genefl.engine.server import auto_eval_every, evaluates_at
from genefl.engine.simulation import prepare_simulation, run_simulation
from genefl.models.layers import set_params


def _trained_simulation(method: str):
    """Every known client trains in each of 2 rounds, so each has its own model."""
    config, params = resolve({}, {**QUICK, "method": method, "clients_per_round": 6,
                                   "known_rounds": 2, "agnostic_rounds": 0})
    sim = prepare_simulation(config, params, dataset=make_dataset())
    engine = sim.engine
    engine.fed.run_phase("known", sim.known_ids, 2, 6, engine)
    return sim


def _reference(sim, view: str) -> float:
    """Slow reference: each client's test accuracy with the model built by hand."""
    engine, model = sim.engine, sim.engine.model
    correct = total = 0.0
    for cid in sim.known_ids:
        own = engine.store.get(cid).params
        k = engine.server.assignment[cid]
        params = dict(own)
        if view == "server":
            cluster = engine.server.cluster_models[k]
            local = set(sim.algorithm.kept_local(k))
            for layer in sim.layers:
                if layer.name not in local:
                    for name in layer.tensor_names:
                        params[name] = cluster[name]
        set_params(model, params)
        test = sim.clients[cid].test
        correct += evaluate(model, test.x, test.y) * test.y.shape[0]
        total += test.y.shape[0]
    return correct / total


@pytest.mark.parametrize("method", ["fedavg", "fedbn", "local", "genefl"])
def test_both_views_equal_a_hand_built_reference(method: str) -> None:
    sim = _trained_simulation(method)
    personal, server = sim.engine.fed.evaluate_clients(sim.known_ids, sim.engine)
    assert personal == pytest.approx(_reference(sim, "personal"), abs=1e-12)
    assert server == pytest.approx(_reference(sim, "server"), abs=1e-12)
    if method == "local":
        assert server == personal  # nothing is exchanged: the server view is the own model


def test_what_each_method_keeps_local_by_design() -> None:
    kept = {m: _trained_simulation(m).algorithm for m in ("fedavg", "fedbn", "genefl",
                                                           "local", "parfed")}
    layers = kept["fedavg"].layers
    norms = [layer.name for layer in layers if layer.kind == "norm"]
    assert kept["fedavg"].kept_local(0) == []
    assert kept["genefl"].kept_local(0) == []  # chosen round by round, not by design
    assert kept["fedbn"].kept_local(0) == norms
    assert kept["local"].kept_local(0) == [layer.name for layer in layers]
    assert kept["parfed"].kept_local(0) == kept["parfed"].last_convs


def test_views_differ_after_local_training() -> None:
    """FedAvg's clients trained after the cluster model they sent was averaged: their own
    models are not the server's, so the two views are different numbers.
    """
    sim = _trained_simulation("fedavg")
    personal, server = sim.engine.fed.evaluate_clients(sim.known_ids, sim.engine)
    assert personal != server


def test_every_client_is_scored_at_the_scheduled_rounds() -> None:
    config, params = resolve({}, {**QUICK, "method": "fedavg", "known_rounds": 5,
                                   "agnostic_rounds": 3, "eval_every": 2})
    rec = Recorder()
    results = run_simulation(config, params, [rec], dataset=make_dataset())
    known = [r for r in rec.rounds if r.phase == "known"]
    agnostic = [r for r in rec.rounds if r.phase == "agnostic"]
    scored = [r.phase_round for r in known if r.eval_clients]
    assert scored == [0, 1, 3, 4] == results["known_eval_rounds"]
    assert all(r.eval_clients == 6 for r in known if r.eval_clients)  # every known client
    assert all(math.isnan(r.eval_accuracy) for r in known if not r.eval_clients)
    assert [r.eval_accuracy for r in known if r.eval_clients] == results["known_eval_accuracy"]
    assert results["known_accuracy"] == results["known_eval_accuracy"][-1]
    assert results["known_accuracy_server"] == results["known_eval_accuracy_server"][-1]
    # agnostic phase: the clients that have joined so far, after the round's joins
    joined_after = []
    seen: set[int] = set()
    for r in agnostic:
        seen |= {c.client_id for c in rec.clients if c.round == r.round}
        joined_after.append(len(seen))
    assert [r.eval_clients for r in agnostic] == joined_after  # rounds 0, 1, 2 all scored
    assert results["agnostic_accuracy_round0"] == results["agnostic_eval_accuracy"][0]
    assert results["agnostic_accuracy"] == results["agnostic_eval_accuracy"][-1]
    assert results["eval_every"] == 2


def test_evaluation_schedule_and_auto_interval() -> None:
    assert [r for r in range(10) if evaluates_at(r, 10, 3)] == [0, 2, 5, 8, 9]
    assert [r for r in range(4) if evaluates_at(r, 4, 1)] == [0, 1, 2, 3]
    assert not any(evaluates_at(r, 4, 0) for r in range(4))
    # CI preset figures: 5,000 test images, 5 x 337 training images, 2 epochs:
    # 2 x 5000 / (0.1 x 5 x 1686 x 2) = 5.9 -> every 6 rounds
    assert auto_eval_every(5000, 5 * 337.2, 2) == 6
    assert auto_eval_every(100, 5 * 1000, 10) == 1  # cheap: every round
    assert auto_eval_every(5000, 0, 2) == 1
