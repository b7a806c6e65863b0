"""End to end: the in-process engine against Flower's simulation engine and a Flower
deployment (issues 5, 11).

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
of ``rounds.csv``'s seconds).

The deployment (GENE-FL only) is a real one on loopback, with TLS and SuperNode
authentication (the harness of ``tests/flower/deployment.py``: ``scripts/flower_certs.sh``
credentials, one ``flower-superlink``, one registered ``flower-supernode`` per client,
all connected before ``flwr run``, ``wait-for-all`` so that sampling is the engine's, one
torch thread per process). Its end-to-end time runs from starting the SuperLink to the
run's end (SuperLink and SuperNode start-up, key registration, ``flwr run``: app upload,
ServerApp start, clustering, rounds, evaluation), without the shut-down; ``deploy_run_s``
is ``flwr run`` alone; its rounds alone are again ``rounds.csv``'s. Every Flower message
starts a fresh ``flwr-clientapp`` process there (torch import, data set), which is what
dominates. Bytes are what each driver's server counts on the wire (4 bytes per float):
up (clients to server: uploads and signatures) and down (server to clients: downloads,
learnGene initialisations included), which must be equal across the three.
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


REPO = Path(__file__).resolve().parents[1]


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


#: the engine's settings tried, ``(workers, threads per worker)``; 0 threads: all cores
ENGINE_SETTINGS = ((1, 1), (1, 0), (2, 1))


def run_engine(values: dict[str, Any]) -> dict[str, Any]:
    """The engine's seconds and results at its best setting on this machine: the fastest
    of :data:`ENGINE_SETTINGS` (one thread as a Ray worker has, all cores in one process,
    two worker processes with one thread each), each a fresh end-to-end run.
    """
    threads = torch.get_num_threads()
    best: dict[str, Any] = {}
    tried = {}
    for workers, per in ENGINE_SETTINGS:
        torch.set_num_threads(per or os.cpu_count() or 1)
        try:
            t0 = time.perf_counter()
            results = run_in_process(*resolve({**values, "workers": workers,
                                               "threads_per_worker": per}, {}))
            seconds = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
        label = f"{workers}x{per or 'all'}"
        tried[label] = seconds
        if not best or seconds < best["seconds"]:
            best = {"seconds": seconds, "results": results, "setting": label}
    best["tried"] = tried
    return best


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


def _harness() -> Any:
    """``tests/flower/deployment.py`` (the deployment harness), imported."""
    import sys

    folder = str(REPO / "tests" / "flower")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import deployment

    return deployment


def deployment_unavailable() -> str | None:
    """Why the deployment cannot be measured here (``None``: it can)."""
    if not flwr_available():
        return "flwr is not installed"
    return _harness().missing_prerequisites()


def run_deployment(values: dict[str, Any], timeout: float = 1200) -> dict[str, Any]:
    """A loopback deployment (TLS + SuperNode authentication) of the run: seconds end to
    end, of ``flwr run`` alone, of the rounds alone, and the results.
    """
    from genefl.flower.deploy import write_app

    dep = _harness()
    n, m = int(values["known_clients"]), int(values["agnostic_clients"])
    with tempfile.TemporaryDirectory(prefix="genefl-flower-deploy-") as tmp:
        root = Path(tmp)
        out = root / "out"
        creds = dep.make_credentials(root / "creds", n + m)
        app = write_app(root / "app", {**values, "output_dir": str(out), "wait_for_all": True,
                                       "round_timeout": 600.0, "node_wait": 600.0})
        t0 = time.perf_counter()
        with dep.Deployment(root / "work", creds) as d:
            d.extra_env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            link = d.start_superlink()
            for key in creds.node_keys:
                d.register(key)
            nodes = [
                d.start_supernode(f"supernode-{c}", link, creds.node_keys[c], {
                    "client-id": c, "kind": "known" if c < n else "agnostic",
                    "dataset": str(values.get("dataset", "digits")),
                })
                for c in range(n + m)
            ]
            for node in nodes:
                node.wait_for(r"SuperNode ID: \d+", timeout=120)
            t1 = time.perf_counter()
            d.run_app(app, timeout=timeout)
            t2 = time.perf_counter()
        results = json.loads((out / "results.json").read_text())
        return {"seconds": t2 - t0, "run_s": t2 - t1, "rounds_s": _rounds_s(out),
                "results": results}


def wire_bytes(results: dict[str, Any]) -> dict[str, int]:
    """``up`` (uploads and signatures) and ``down`` (downloads, initialisations
    included) over both phases, as a run's server counted them.
    """
    return {
        "up": int(results["upload_bytes"] + results["upload_bytes_agnostic"]
                  + results["signature_bytes"]),
        "down": int(results["download_bytes"] + results["download_bytes_agnostic"]),
    }


def measure(samples: int = 150, epochs: int = 2, rounds: int = 3,
            per_round: int = CLIENTS, deployment: bool = True) -> dict[str, Any]:
    """Engine and Flower seconds per method, and ``flower_sim_vs_engine`` = Flower's total
    end-to-end seconds / the engine's total seconds, FedAvg and GENE-FL summed. With
    ``deployment`` (and flwr, openssl), GENE-FL also runs as a loopback deployment:
    ``out["genefl"]["deploy_s"]`` (end to end), ``deploy_run_s``, ``deploy_rounds_s``,
    ``bytes`` (``up``/``down`` per driver) and ``flower_deploy_vs_engine`` (its end to
    end over the engine's GENE-FL seconds); ``deployment`` is the reason when skipped.
    """
    out: dict[str, Any] = {"clients": CLIENTS, "agnostic_clients": AGNOSTIC,
                           "per_round": per_round, "rounds": rounds,
                           "agnostic_rounds": AGNOSTIC_ROUNDS, "samples_per_client": samples,
                           "epochs": epochs,
                           "deployment": "not requested"}
    for method in METHODS:
        values = protocol(method, samples, epochs, rounds, per_round)
        eng = run_engine(values)
        flo = run_flower(values)
        e, f = eng["results"], flo["results"]
        accuracies = [k for k in e if "accuracy" in k and isinstance(e[k], float)]
        out[method] = {
            "engine_s": eng["seconds"], "flower_s": flo["seconds"],
            "engine_setting": eng["setting"], "engine_tried_s": eng["tried"],
            "flower_rounds_s": flo["rounds_s"],
            "engine_upload_bytes": e["upload_bytes"], "flower_upload_bytes": f["upload_bytes"],
            "bytes_match": all(e[k] == f[k] for k in COMPARED),
            "max_accuracy_diff": max(abs(e[k] - f[k]) for k in accuracies),
            "bytes": {"engine": wire_bytes(e), "simulation": wire_bytes(f)},
        }
        if method == "genefl" and deployment:
            why = deployment_unavailable()
            out["deployment"] = why
            if why is None:
                dep = run_deployment(values)
                g = dep["results"]
                out[method].update({
                    "deploy_s": dep["seconds"], "deploy_run_s": dep["run_s"],
                    "deploy_rounds_s": dep["rounds_s"],
                    "deploy_bytes_match": all(e[k] == g[k] for k in COMPARED),
                    "deploy_max_accuracy_diff": max(abs(e[k] - g[k]) for k in accuracies),
                })
                out[method]["bytes"]["deployment"] = wire_bytes(g)
    engine_s = sum(out[m]["engine_s"] for m in METHODS)
    flower_s = sum(out[m]["flower_s"] for m in METHODS)
    out["engine_s"], out["flower_s"] = engine_s, flower_s
    out["flower_rounds_s"] = sum(out[m]["flower_rounds_s"] for m in METHODS)
    out["flower_sim_vs_engine"] = flower_s / engine_s
    out["flower_rounds_vs_engine"] = out["flower_rounds_s"] / engine_s
    out["max_accuracy_diff"] = max(out[m]["max_accuracy_diff"] for m in METHODS)
    out["bytes_match"] = all(out[m]["bytes_match"] for m in METHODS)
    g = out["genefl"]
    out["flower_deploy_vs_engine"] = (g["deploy_s"] / g["engine_s"]) if "deploy_s" in g else None
    return out


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
