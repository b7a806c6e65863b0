"""End to end: the in-process engine against Flower's simulation engine (issue 5).

The same small protocol runs on both, for FedAvg and for GENE-FL: the CNN and
Fashion-MNIST-shaped random data of :mod:`engine` (``CLIENTS`` clients, one cluster),
the same rounds, sampled participants, local epochs and seeds. Each side's client work
is :func:`genefl.engine.client.client_update`. Flower runs with its Ray backend, one CPU
per client (two clients train in parallel on two cores, one torch thread each).

Times are wall seconds of a fresh run: for the engine, building it and its rounds; for
Flower, ``flwr.simulation.run_simulation`` (Ray start-up, node start, rounds, shut-down:
what a user pays) and, separately, the rounds alone as timed inside the ServerApp.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import torch
from engine import CLIENTS, _setup

from genefl.algorithms.registry import get_algorithm_class
from genefl.config import resolve
from genefl.engine.local import LocalSettings
from genefl.engine.rounds import Engine, ServerState
from genefl.models import build_model, get_params, list_layers

METHODS = ("fedavg", "genefl")


def flwr_available() -> bool:
    """Whether the ``flower`` extra is installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def _parts(method: str, model: torch.nn.Module, clients: dict) -> tuple[Any, list, dict, Any]:
    config, params = resolve({}, {"method": method})
    layers = list_layers(model)
    initial = get_params(model, layers)
    algo = get_algorithm_class(method)(params, layers, 1)
    server = ServerState([dict(initial)], np.zeros((1, 1)), [CLIENTS], dict.fromkeys(clients, 0))
    return algo, layers, initial, server


def run_engine(method: str, samples: int, settings: LocalSettings, rounds: int,
               per_round: int) -> dict[str, Any]:
    """Engine seconds, upload bytes per round and the final cluster model."""
    model, clients = _setup(samples)
    t0 = time.perf_counter()
    algo, layers, initial, server = _parts(method, model, clients)
    engine = Engine(algo, model, layers, clients, server, initial, settings, seed=0)
    log = engine.run_phase("known", list(clients), rounds, per_round)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "round_uploads": log.round_uploads,
            "accuracies": log.accuracies, "model": server.cluster_models[0]}


def run_flower(method: str, samples: int, settings: LocalSettings, rounds: int,
               per_round: int, cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Flower simulation seconds (end to end and rounds only), bytes and final model."""
    from flwr.simulation import run_simulation

    from genefl.flower import build_apps

    model, clients = _setup(samples)
    t0 = time.perf_counter()
    algo, layers, initial, server = _parts(method, model, clients)

    def make_model() -> torch.nn.Module:
        return build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0))

    server_app, client_app, run = build_apps(
        algo, make_model, layers, clients, server, initial, settings, seed=0,
        rounds=rounds, per_round=per_round,
    )
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # quiet Ray warning
    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # run_simulation's deprecation notice, progress lines
    try:
        run_simulation(
            server_app, client_app, num_supernodes=CLIENTS,
            backend_config={
                "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                              "logging_level": logging.ERROR, "log_to_driver": False},
            },
        )
    finally:
        flwr_log.setLevel(level)
    seconds = time.perf_counter() - t0
    if len(run.round_uploads) != rounds:
        raise RuntimeError(f"Flower simulation ran {len(run.round_uploads)} of {rounds} rounds")
    return {"seconds": seconds, "rounds_s": run.rounds_s, "round_uploads": run.round_uploads,
            "accuracies": run.accuracies, "model": server.cluster_models[0]}


def measure(samples: int = 300, epochs: int = 2, rounds: int = 3,
            per_round: int = CLIENTS) -> dict[str, Any]:
    """Engine and Flower seconds per method, and ``flower_sim_vs_engine`` = Flower's total
    end-to-end seconds / the engine's total seconds, FedAvg and GENE-FL summed.
    """
    settings = LocalSettings(epochs, 64, 0.01, 0.9)
    out: dict[str, Any] = {"clients": CLIENTS, "per_round": per_round, "rounds": rounds,
                           "samples_per_client": samples, "epochs": epochs}
    for method in METHODS:
        eng = run_engine(method, samples, settings, rounds, per_round)
        flo = run_flower(method, samples, settings, rounds, per_round)
        diff = max(float((eng["model"][k] - flo["model"][k]).abs().max()) for k in eng["model"])
        out[method] = {
            "engine_s": eng["seconds"], "flower_s": flo["seconds"],
            "flower_rounds_s": flo["rounds_s"],
            "engine_upload_bytes": sum(eng["round_uploads"]),
            "flower_upload_bytes": sum(flo["round_uploads"]),
            "max_model_diff": diff,
        }
    engine_s = sum(out[m]["engine_s"] for m in METHODS)
    flower_s = sum(out[m]["flower_s"] for m in METHODS)
    out["engine_s"], out["flower_s"] = engine_s, flower_s
    out["flower_rounds_s"] = sum(out[m]["flower_rounds_s"] for m in METHODS)
    out["flower_sim_vs_engine"] = flower_s / engine_s
    out["flower_rounds_vs_engine"] = out["flower_rounds_s"] / engine_s
    out["max_model_diff"] = max(out[m]["max_model_diff"] for m in METHODS)
    out["bytes_match"] = all(
        out[m]["engine_upload_bytes"] == out[m]["flower_upload_bytes"] for m in METHODS
    )
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
