"""Client-store memory: peak RSS with 10,000 clients against 100 (10 per round).

Each measurement runs in its own process (peak RSS is per process). A round samples 10
clients, reads each one's model from the store (or the initial one), perturbs it as
training would, and writes it back; with ``prefill`` every client has a record first.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from genefl.engine.store import ClientStore, DiskClientStore
from genefl.models import build_model, get_params, list_layers

PER_ROUND = 10


def workload(clients: int, rounds: int, kind: str, prefill: bool) -> dict[str, float]:
    """Run the store workload in this process; return peak RSS (MiB) and seconds/round."""
    model = build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0))
    initial = get_params(model, list_layers(model))
    with tempfile.TemporaryDirectory() as folder:
        store = ClientStore() if kind == "memory" else DiskClientStore(folder, cache_size=20)
        if prefill:
            for cid in range(clients):
                store.put(cid, {k: v.clone() for k, v in initial.items()}, {})
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(rounds):
            for cid in rng.choice(clients, size=PER_ROUND, replace=False):
                record = store.get(int(cid))
                params = record.params if record is not None else initial
                store.put(int(cid), {k: v + 0.001 for k, v in params.items()}, {})
        seconds = (time.perf_counter() - t0) / rounds
    return {"peak_rss_mb": peak_rss_mb(), "round_s": seconds}


def peak_rss_mb() -> float:
    """Peak resident memory of the current process (MiB) since its exec.

    ``VmHWM`` rather than ``ru_maxrss``: on Linux the latter survives ``fork`` + ``exec``
    and would report the (larger) parent's memory for a small child.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(rounds: int = 100, prefill: bool = False, kind: str = "disk") -> dict[str, Any]:
    """Peak RSS and round time for 100 and 10,000 clients, each in a fresh process."""
    out: dict[str, Any] = {"kind": kind, "rounds": rounds, "prefill": prefill}
    for clients in (100, 10_000):
        code = (
            "import json, sys; sys.path.insert(0, 'benchmarks'); from store import workload; "
            f"print(json.dumps(workload({clients}, {rounds}, {kind!r}, {prefill})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True)
        out[clients] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["rss_10k_vs_100"] = out[10_000]["peak_rss_mb"] / out[100]["peak_rss_mb"]
    out["round_time_10k_vs_100"] = out[10_000]["round_s"] / out[100]["round_s"]
    return out
