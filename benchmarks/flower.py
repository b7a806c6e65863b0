"""End to end: the in-process engine against Flower's simulation engine (issues 5, 11).

The same small federation runs on both, for FedAvg and for GENE-FL: digits, the small
CNN, ``CLIENTS`` known and ``AGNOSTIC`` agnostic clients in one cluster, ``rounds`` known
rounds and ``AGNOSTIC_ROUNDS`` agnostic rounds (new clients join by signature and start
from the learnGene). Both drive the same server (:mod:`genefl.engine.server`) and the
same client work (:func:`genefl.engine.client.client_update`); Flower runs genefl's
ServerApp and ClientApp (:mod:`genefl.flower`) with its Ray backend, one CPU per client
(two clients train in parallel on two cores, one torch thread each).

Times are wall seconds of a fresh run: for the engine, ``run_simulation`` (data,
clustering, rounds); for Flower, ``flwr.simulation.run_simulation`` (Ray start-up, node
start, rounds, shut-down: what a user pays) and, separately, the rounds alone (the sum
of ``rounds.csv``'s seconds). The deployment (SuperLink, SuperNodes) figure is measured
by the deployment benchmark.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from genefl.config import resolve
from genefl.engine.simulation import run_simulation as run_in_process

METHODS = ("fedavg", "genefl")
CLIENTS = 4
AGNOSTIC = 2
AGNOSTIC_ROUNDS = 2
#: digits' training images, to turn samples per client into a training fraction
DIGITS_TRAIN = 1347
#: results that must agree between the drivers
COMPARED = ("upload_bytes", "download_bytes", "upload_bytes_agnostic",
            "download_bytes_agnostic", "init_bytes_total", "signature_bytes")


def flwr_available() -> bool:
    """Whether the ``flower`` extra is installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def protocol(method: str, samples: int, epochs: int, rounds: int,
             per_round: int) -> dict[str, Any]:
    """The benchmark's run options."""
    fraction = min(1.0, samples * (CLIENTS + AGNOSTIC) / DIGITS_TRAIN)
    return dict(method=method, known_clients=CLIENTS, agnostic_clients=AGNOSTIC, clusters=1,
                known_rounds=rounds, agnostic_rounds=AGNOSTIC_ROUNDS,
                clients_per_round=min(per_round, AGNOSTIC), local_epochs=epochs,
                train_fraction=fraction, device="cpu", checkpoint_every=0)


def _rounds_s(folder: Path) -> float:
    with (folder / "rounds.csv").open(newline="") as fh:
        return sum(float(r["seconds"]) for r in csv.DictReader(fh))


def run_engine(values: dict[str, Any]) -> dict[str, Any]:
    """Engine seconds and results (one torch thread, as a Ray worker)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        results = run_in_process(*resolve(values, {}))
        return {"seconds": time.perf_counter() - t0, "results": results}
    finally:
        torch.set_num_threads(threads)


def run_flower(values: dict[str, Any], cpus_per_client: float = 1.0) -> dict[str, Any]:
    """Flower simulation seconds (end to end and rounds only) and results."""
    from flwr.simulation import run_simulation

    from genefl.flower.client_app import make_client_app
    from genefl.flower.runconfig import run_config_values
    from genefl.flower.server_app import make_server_app

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # quiet Ray warning
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="genefl-flower-bench-") as tmp:
        out = Path(tmp) / "out"
        run_config = run_config_values({**values, "output_dir": str(out)})
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(logging.ERROR)  # run_simulation's deprecation notice, round lines
        t0 = time.perf_counter()
        try:
            run_simulation(
                make_server_app(run_config), make_client_app(run_config),
                num_supernodes=CLIENTS + AGNOSTIC,
                backend_config={
                    "client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                    "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                                  "logging_level": logging.ERROR, "log_to_driver": False},
                },
            )
        finally:
            flwr_log.setLevel(level)
        seconds = time.perf_counter() - t0
        if not (out / "results.json").exists():
            raise RuntimeError("the Flower simulation wrote no results.json")
        results = json.loads((out / "results.json").read_text())
        return {"seconds": seconds, "rounds_s": _rounds_s(out), "results": results}


def measure(samples: int = 150, epochs: int = 2, rounds: int = 3,
            per_round: int = CLIENTS) -> dict[str, Any]:
    """Engine and Flower seconds per method, and ``flower_sim_vs_engine`` = Flower's total
    end-to-end seconds / the engine's total seconds, FedAvg and GENE-FL summed.
    """
    out: dict[str, Any] = {"clients": CLIENTS, "agnostic_clients": AGNOSTIC,
                           "per_round": per_round, "rounds": rounds,
                           "agnostic_rounds": AGNOSTIC_ROUNDS, "samples_per_client": samples,
                           "epochs": epochs}
    for method in METHODS:
        values = protocol(method, samples, epochs, rounds, per_round)
        eng = run_engine(values)
        flo = run_flower(values)
        e, f = eng["results"], flo["results"]
        accuracies = [k for k in e if "accuracy" in k and isinstance(e[k], float)]
        out[method] = {
            "engine_s": eng["seconds"], "flower_s": flo["seconds"],
            "flower_rounds_s": flo["rounds_s"],
            "engine_upload_bytes": e["upload_bytes"], "flower_upload_bytes": f["upload_bytes"],
            "bytes_match": all(e[k] == f[k] for k in COMPARED),
            "max_accuracy_diff": max(abs(e[k] - f[k]) for k in accuracies),
        }
    engine_s = sum(out[m]["engine_s"] for m in METHODS)
    flower_s = sum(out[m]["flower_s"] for m in METHODS)
    out["engine_s"], out["flower_s"] = engine_s, flower_s
    out["flower_rounds_s"] = sum(out[m]["flower_rounds_s"] for m in METHODS)
    out["flower_sim_vs_engine"] = flower_s / engine_s
    out["flower_rounds_vs_engine"] = out["flower_rounds_s"] / engine_s
    out["max_accuracy_diff"] = max(out[m]["max_accuracy_diff"] for m in METHODS)
    out["bytes_match"] = all(out[m]["bytes_match"] for m in METHODS)
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
