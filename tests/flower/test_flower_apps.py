"""One Flower simulation round of FedAvg equals one engine round (skipped without flwr)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from genefl.algorithms.base import ClientData  # noqa: E402
from genefl.algorithms.registry import get_algorithm_class  # noqa: E402
from genefl.config import resolve  # noqa: E402
from genefl.engine.local import LocalSettings  # noqa: E402
from genefl.engine.rounds import ClientTensors, Engine, ServerState  # noqa: E402
from genefl.flower import build_apps  # noqa: E402
from genefl.models import build_model, get_params, list_layers  # noqa: E402

CLIENTS = 3


def _parts():
    model = build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    clients = {}
    for cid in range(CLIENTS):
        x = torch.randn(24, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (24,), generator=gen)
        clients[cid] = ClientTensors(ClientData(x, y), ClientData(x[:8], y[:8]),
                                     ClientData(x[:8], y[:8]), np.zeros((1, 1)))
    _, params = resolve({}, {"method": "fedavg"})
    layers = list_layers(model)
    initial = get_params(model, layers)
    algo = get_algorithm_class("fedavg")(params, layers, 1)
    server = ServerState([dict(initial)], np.zeros((1, 1)), [CLIENTS], dict.fromkeys(clients, 0))
    return model, clients, layers, initial, algo, server


@pytest.mark.slow
def test_flower_round_matches_engine_round():
    from flwr.simulation import run_simulation

    settings = LocalSettings(1, 8, 0.01, 0.9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray worker trains with one thread
    try:
        model, clients, layers, initial, algo, server = _parts()
        engine = Engine(algo, model, layers, clients, server, initial, settings, seed=0)
        log = engine.run_phase("known", list(clients), 2, 2)
    finally:
        torch.set_num_threads(threads)
    _, clients, layers, initial, algo, f_server = _parts()
    server_app, client_app, run = build_apps(
        algo, lambda: build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0)),
        layers, clients, f_server, initial, settings, seed=0, rounds=2, per_round=2,
    )
    run_simulation(server_app, client_app, num_supernodes=CLIENTS, backend_config={
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False},
    })
    assert run.round_uploads == log.round_uploads
    assert run.accuracies == pytest.approx(log.accuracies)
    for name, tensor in server.cluster_models[0].items():
        torch.testing.assert_close(f_server.cluster_models[0][name], tensor, rtol=0, atol=1e-6)
