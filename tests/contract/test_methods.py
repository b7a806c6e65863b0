"""The contract every registered method keeps (STYLE §8), checked on a small run each:

* it learns: known clients and new clients end well above chance;
* a new client starts from exactly what the method's table row says it initialises from
  (README "Methods": cluster model, cluster model without norm layers, partial model,
  learnGene without the head, random weights): the layers of its init package, their
  values (the cluster model's at the moment it joins), fresh weights everywhere else, the
  init bytes, and a first-round download that adds only what the method downloads every
  round — never the known classes' head for a method that promises a fresh one.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_dataset

from genefl.algorithms.registry import algorithm_names
from genefl.callbacks.base import Callback, ClientRoundRecord
from genefl.config import resolve
from genefl.engine.simulation import prepare_simulation
from genefl.method.cluster import data_signature
from genefl.models.layers import Layer

#: toy data: 6 classes, known / agnostic halves of 3; each client holds 2 of its 3 classes
NUM_CLASSES, SHARDS = 6, 2
CHANCE = 1 / SHARDS  # the best a client can do without learning (its majority class)
RUN = dict(
    known_clients=4, agnostic_clients=4, clusters=2, known_rounds=3, agnostic_rounds=3,
    clients_per_round=4, local_epochs=3, batch_size=16, lr=0.05, shards=SHARDS,
    device="cpu",
)
#: how far above chance every method must end (known clients, and new clients' last round)
MARGIN = 0.2

#: methods whose new clients must never see the known classes' head
FRESH_HEAD = {"genefl", "fedlg", "fedfina", "local"}
#: methods whose clients keep their own model instead of overlaying the download on it
#: (GENE-FL's Algorithm 1 trains from theta_prev; the download is the L_gen anchor)
KEEPS_OWN = {"genefl"}


def _main_convs(layers: list[Layer]) -> list[str]:
    return [la.name for la in layers if la.kind == "conv" and "shortcut" not in la.name
            and "downsample" not in la.name]


def expected_init_layers(method: str, algorithm: Any, cluster: int) -> list[str]:
    """What each method's table row promises a new client, written independently of the
    methods' code (SPEC §7: c = max(1, round(4 n / 17)) main-path convolutions)."""
    layers = algorithm.layers
    names = [la.name for la in layers]
    head = [la.name for la in layers if la.kind == "linear"][-1]
    convs = _main_convs(layers)
    c = max(1, round(4 * len(convs) / 17))
    if method in ("fedavg", "fedlp", "fedlps"):
        return names  # the cluster (full) model
    if method == "fedbn":
        return [la.name for la in layers if la.kind != "norm"]
    if method == "parfed":
        return [n for n in names if n not in convs[-c:]]
    if method == "fedfina":
        return convs[-c:]
    if method in ("genefl", "fedlg"):  # the cluster learnGene, head fresh
        return [n for n in algorithm.learngenes.layers(cluster) if n != head]
    if method == "local":
        return []
    raise AssertionError(f"no table row for {method}: add it to this contract test")


class Records(Callback):
    def __init__(self) -> None:
        self.clients: list[ClientRoundRecord] = []

    def on_client_end(self, record: ClientRoundRecord) -> None:
        self.clients.append(record)


def _run(method: str) -> dict[str, Any]:
    """Both phases, spying on each joiner's package and first start model."""
    config, params = resolve({}, {**RUN, "method": method})
    records = Records()
    sim = prepare_simulation(config, params, [records],
                             dataset=make_dataset(num_classes=NUM_CLASSES))
    engine, algo, server = sim.engine, sim.algorithm, sim.server
    joins: dict[int, dict[str, Any]] = {}
    real_init, real_start = algo.init_new_client, algo.start_params

    def init_spy(fresh, package, ctx):
        k = server.assignment[ctx.client_id]
        joins[ctx.client_id] = {
            "cluster": k, "package": {n: t.clone() for n, t in package.items()},
            "cluster_model": {n: t.clone() for n, t in server.cluster_models[k].items()},
            "fresh": {n: t.clone() for n, t in fresh.items()},
            "expected": expected_init_layers(method, algo, k),
            "download": algo.download_layers(k, "agnostic"),
        }
        return real_init(fresh, package, ctx)

    def start_spy(received, own, initial, ctx):
        out = real_start(received, own, initial, ctx)
        join = joins.get(ctx.client_id)
        if ctx.phase == "agnostic" and join is not None and "start" not in join:
            join["start"] = {n: t.clone() for n, t in out.items()}
            join["received"] = {n: t.clone() for n, t in received.items()}
        return out

    algo.init_new_client, algo.start_params = init_spy, start_spy
    engine.run_phase("known", sim.known_ids, config.known_rounds, config.clients_per_round)
    head = [la.name for la in algo.layers if la.kind == "linear"][-1]
    known_heads = [{n: m[n].clone() for n in engine.layer_map[head].tensor_names}
                   for m in server.cluster_models]
    known_accuracy = engine.evaluate_clients(sim.known_ids)
    signatures = {cid: data_signature(sim.clients[cid].pixels, config.signature_dim)
                  for cid in sim.agnostic_ids}
    agnostic = engine.run_phase("agnostic", sim.agnostic_ids, config.agnostic_rounds,
                                config.clients_per_round, signatures=signatures)
    out = {"known_accuracy": known_accuracy, "agnostic": agnostic.accuracies, "joins": joins,
           "records": records.clients, "layer_map": engine.layer_map, "known_heads": known_heads}
    sim.close()
    return out


@pytest.fixture(scope="module", params=algorithm_names())
def method_run(request) -> tuple[str, dict[str, Any]]:
    return request.param, _run(request.param)


def test_method_learns_above_chance(method_run) -> None:
    method, run = method_run
    assert run["known_accuracy"] > CHANCE + MARGIN, (method, run["known_accuracy"])
    assert run["agnostic"][-1] > CHANCE + MARGIN, (method, run["agnostic"])


def _layer_tensors(layer_map, names) -> list[str]:
    return [t for n in names for t in layer_map[n].tensor_names]


def test_joiner_starts_from_what_the_table_row_says(method_run) -> None:
    method, run = method_run
    joins, layer_map = run["joins"], run["layer_map"]
    assert joins, f"{method}: nobody joined"
    head = [n for n, la in layer_map.items() if la.kind == "linear"][-1]
    records = {r.client_id: r for r in run["records"] if r.phase == "agnostic" and r.joined}
    for cid, join in joins.items():
        expected = join["expected"]
        # the init package: exactly the promised layers, with the cluster's values
        assert sorted(join["package"]) == sorted(_layer_tensors(layer_map, expected)), method
        for name, tensor in join["package"].items():
            assert torch.equal(tensor, join["cluster_model"][name]), (method, name)
        assert records[cid].init_bytes == sum(layer_map[n].nbytes for n in expected), method
        # first-round download: what the method downloads every round, minus the package
        sent = [n for n in join["download"] if n not in expected]
        assert records[cid].download_bytes == sum(layer_map[n].nbytes for n in sent), method
        if method in FRESH_HEAD:  # no head in the package, no known head downloaded
            assert head not in expected, method
            for name in layer_map[head].tensor_names:
                known = run["known_heads"][join["cluster"]][name]
                got = join["received"].get(name)
                assert got is None or not torch.equal(got, known), (method, name)
        # the start model of its first round: fresh weights, the promised layers from the
        # cluster, then the round's download on top (except for GENE-FL, which trains from
        # its own model); FedLPS's pruning mask zeroes some entries
        start, fresh, cluster = join["start"], join["fresh"], join["cluster_model"]
        promised = set(_layer_tensors(layer_map, expected))
        for name, value in start.items():
            if not value.is_floating_point():
                continue
            source = cluster[name] if name in promised else fresh[name]
            if method not in KEEPS_OWN and name in join["received"]:
                source = join["received"][name]
            if method == "fedlps":
                assert bool(((value == source) | (value == 0)).all()), (method, name)
            else:
                assert torch.equal(value, source), (method, name)
