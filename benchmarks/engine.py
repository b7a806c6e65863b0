"""Engine speed: in-process rounds against a bare PyTorch loop, GENE-FL against FedAvg.

Both sides use the same small CNN, the same Fashion-MNIST-shaped data (1 x 28 x 28,
10 classes, random pixels: speed does not depend on the pixel values), the same clients,
batches and epochs; they run alternately in one process and the medians are compared.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genefl.algorithms.base import ClientData
from genefl.algorithms.registry import get_algorithm_class
from genefl.config import resolve
from genefl.engine.local import LocalSettings
from genefl.engine.rounds import ClientTensors, Engine, PhaseLog, ServerState
from genefl.models import build_model, get_params, list_layers, set_params

CLIENTS = 5


def _setup(samples: int, seed: int = 0) -> tuple[torch.nn.Module, dict[int, ClientTensors]]:
    gen = torch.Generator().manual_seed(seed)
    model = build_model("cnn", 1, 10, 28, gen)
    clients = {}
    for cid in range(CLIENTS):
        x = torch.randn(samples, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (samples,), generator=gen)
        small = ClientData(x[:16], y[:16])
        clients[cid] = ClientTensors(ClientData(x, y), small, small, np.zeros((1, 1)))
    return model, clients


def _engine(method: str, model, clients, settings: LocalSettings) -> Engine:
    config, params = resolve({}, {"method": method})
    layers = list_layers(model)
    initial = get_params(model, layers)
    algo = get_algorithm_class(method)(params, layers, 1)
    server = ServerState([dict(initial)], np.zeros((1, 1)), [CLIENTS], dict.fromkeys(clients, 0))
    return Engine(algo, model, layers, clients, server, initial, settings, seed=0)


def bare_round(model, clients, settings: LocalSettings, initial) -> None:
    """What a hand-written FedAvg round does: train each client from the global weights
    with tensor-indexed batches, then average.
    """
    states = []
    for cid, data in clients.items():
        set_params(model, initial)
        opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
        model.train()
        gen = torch.Generator().manual_seed(cid)
        n = data.train.x.shape[0]
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    for k in states[0]:
        if states[0][k].is_floating_point():
            torch.stack([s[k] for s in states]).mean(0)


def measure(samples: int = 600, epochs: int = 2, repeats: int = 3) -> dict[str, Any]:
    """Median round seconds of the bare loop, the engine (FedAvg) and the engine (GENE-FL)."""
    settings = LocalSettings(epochs, 64, 0.01, 0.9)
    model, clients = _setup(samples)
    initial = get_params(model, list_layers(model))
    fedavg = _engine("fedavg", model, clients, settings)
    genefl = _engine("genefl", model, clients, settings)
    times: dict[str, list[float]] = {"bare": [], "fedavg": [], "genefl": []}
    runs = {
        "bare": lambda: bare_round(model, clients, settings, initial),
        "fedavg": lambda: fedavg.run_round(list(clients), "known", 0, PhaseLog()),
        "genefl": lambda: genefl.run_round(list(clients), "known", 0, PhaseLog()),
    }
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    trained = CLIENTS * samples * epochs
    return {
        "samples_per_client": samples, "epochs": epochs, "clients": CLIENTS,
        "bare_round_s": med["bare"], "fedavg_round_s": med["fedavg"],
        "genefl_round_s": med["genefl"],
        "engine_vs_bare": (trained / med["fedavg"]) / (trained / med["bare"]),
        "genefl_vs_fedavg_round": med["genefl"] / med["fedavg"],
    }
