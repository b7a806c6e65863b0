"""Batched local training (``--batched-clients``: ``torch.func.vmap`` over clients) against
the sequential loop: the same FedAvg round of the in-process engine, same clients (equal
sizes, so they form one batch), batches and epochs, timed alternately in one process.
Meant for GPUs; on a small CPU the figure says whether it pays off there.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import engine as engine_bench

from genefl.engine.local import LocalSettings
from genefl.engine.rounds import PhaseLog


def measure(samples: int = 300, epochs: int = 2, repeats: int = 3) -> dict[str, Any]:
    """Median FedAvg round seconds, sequential and batched, and their ratio."""
    settings = LocalSettings(epochs, 64, 0.01, 0.9)
    model, clients = engine_bench._setup(samples)
    engines = {
        "sequential": engine_bench._engine("fedavg", model, clients, settings),
        "batched": engine_bench._engine("fedavg", model, clients, settings),
    }
    engines["batched"].batched = True
    times: dict[str, list[float]] = {name: [] for name in engines}
    for eng in engines.values():  # warm-up
        eng.run_round(list(clients), "known", 0, PhaseLog())
    for _ in range(repeats):
        for name, eng in engines.items():
            t0 = time.perf_counter()
            eng.run_round(list(clients), "known", 0, PhaseLog())
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "clients": len(clients), "samples_per_client": samples, "epochs": epochs,
        "sequential_round_s": med["sequential"], "batched_round_s": med["batched"],
        "batched_vs_sequential_round": med["batched"] / med["sequential"],
    }
