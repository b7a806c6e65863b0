"""Worker processes against the sequential engine, and the memory a run needs (issue 14).

``parallel_vs_sequential_round``: the same round (same participants, same start models)
of FedAvg and of GENE-FL with the small CNN on synthetic 28x28 data, trained by
``WORKERS`` worker processes with one torch thread each against one process with
``WORKERS`` threads; median round seconds over ``repeats`` rounds after a warm-up, the
figure is (FedAvg + GENE-FL parallel) / (FedAvg + GENE-FL sequential). The pool's start-up
is not in it (the pool lives for the whole run); it is reported beside it.

``rss_vs_data``: a CIFAR-10-sized run (50,000 + 10,000 random 32x32x3 images written in
torchvision's ``cifar-10-batches-py`` layout; 20 + 20 clients, small CNN, one round per
phase, one local epoch) as a ``genefl run`` subprocess; the proportional set size (PSS:
shared pages split among the processes that map them, so the shared image buffer counts
once) of the run's process and all its children, sampled every 20 ms, at its peak, over
the float32 size of the data set (60,000 x 3,072 x 4 bytes).
"""

from __future__ import annotations

import pickle
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genefl.config import resolve
from genefl.data.datasets import ImageDataset
from genefl.engine.server import PhaseLog
from genefl.engine.simulation import prepare_simulation
from genefl.machine import process_tree

WORKERS = 2
CLIENTS = 20
PER_ROUND = 4


def synthetic(samples_per_client: int, seed: int = 0) -> ImageDataset:
    """Random 1x28x28 images, 10 classes, enough for ``CLIENTS`` + ``CLIENTS`` clients."""
    rng = np.random.default_rng(seed)
    n = 2 * CLIENTS * samples_per_client * 10 // 9 + 100
    x = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    tx = rng.integers(0, 256, size=(2000, 1, 28, 28), dtype=np.uint8)
    ty = rng.integers(0, 10, size=2000).astype(np.int64)
    return ImageDataset("synthetic", x, y, tx, ty, 10)


def _round_seconds(method: str, dataset: ImageDataset, epochs: int, workers: int,
                   threads: int, repeats: int) -> dict[str, float]:
    values = dict(method=method, known_clients=CLIENTS, agnostic_clients=CLIENTS, clusters=1,
                  clients_per_round=PER_ROUND, local_epochs=epochs, device="cpu",
                  partition="dirichlet", beta=100.0, workers=workers,
                  threads_per_worker=threads, eval_every=1)
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    sim = prepare_simulation(*resolve(values, {}), dataset=dataset)
    setup_s = time.perf_counter() - t0
    try:
        participants = sim.known_ids[:PER_ROUND]
        times = []
        for r in range(repeats + 1):
            t = time.perf_counter()
            sim.engine.run_round(participants, "known", r, PhaseLog())
            times.append(time.perf_counter() - t)
        return {"round_s": statistics.median(times[1:]), "setup_s": setup_s}
    finally:
        sim.close()
        torch.set_num_threads(before)


def measure_rounds(samples: int = 600, epochs: int = 2, repeats: int = 3) -> dict[str, Any]:
    """Round seconds, 2 workers x 1 thread against 1 worker x 2 threads, per method."""
    dataset = synthetic(samples)
    out: dict[str, Any] = {"samples_per_client": samples, "epochs": epochs,
                           "clients": PER_ROUND, "workers": WORKERS}
    par_total = seq_total = 0.0
    for method in ("fedavg", "genefl"):
        seq = _round_seconds(method, dataset, epochs, 1, WORKERS, repeats)
        par = _round_seconds(method, dataset, epochs, WORKERS, 1, repeats)
        out[method] = {"sequential_round_s": seq["round_s"], "parallel_round_s": par["round_s"],
                       "pool_start_s": par["setup_s"] - seq["setup_s"]}
        par_total += par["round_s"]
        seq_total += seq["round_s"]
    out["parallel_vs_sequential_round"] = par_total / seq_total
    return out


# -- memory ------------------------------------------------------------------------------
def write_cifar10(folder: Path, train: int = 50_000, test: int = 10_000) -> Path:
    """Random images in torchvision's CIFAR-10 layout (5 training batches + test)."""
    rng = np.random.default_rng(0)
    root = folder / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    per = train // 5
    for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", test)]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, size=n).tolist()}
        with (root / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    return folder


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_pss_mib(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; ``(peak PSS of it and its children in MiB, seconds, exit code)``."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss_kib(p) for p in process_tree(proc.pid)))
            time.sleep(0.02)

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"the CIFAR-10-sized run failed: {err.decode()[-2000:]}")
    return peak / 1024, time.perf_counter() - t0, proc.returncode


def measure_memory(workers: tuple[int, ...] = (WORKERS,)) -> dict[str, Any]:
    """Peak PSS of a CIFAR-10-sized run over the data set's float32 size, per worker count."""
    if not Path("/proc/self/smaps_rollup").exists():
        return {"rss_vs_data": None, "why": "needs Linux's /proc/<pid>/smaps_rollup"}
    float32_mib = 60_000 * 3072 * 4 / 2**20
    out: dict[str, Any] = {"data_float32_mib": float32_mib,
                           "data_uint8_mib": float32_mib / 4}
    with tempfile.TemporaryDirectory(prefix="genefl-rss-") as tmp:
        data = write_cifar10(Path(tmp) / "data")
        for w in workers:
            command = [
                sys.executable, "-m", "genefl.cli", "run", "--dataset", "cifar10",
                "--data-dir", str(data), "--known-clients", str(CLIENTS),
                "--agnostic-clients", str(CLIENTS), "--clients-per-round", str(PER_ROUND),
                "--known-rounds", "1", "--agnostic-rounds", "1", "--local-epochs", "1",
                "--method", "fedavg", "--device", "cpu", "--workers", str(w),
                "--output-dir", str(Path(tmp) / f"run{w}"), "--quiet",
            ]
            peak, seconds, _ = peak_pss_mib(command)
            out[f"workers_{w}"] = {"peak_pss_mib": peak, "seconds": seconds,
                                   "vs_data": peak / float32_mib}
    out["rss_vs_data"] = max(v["vs_data"] for k, v in out.items() if k.startswith("workers_"))
    return out
