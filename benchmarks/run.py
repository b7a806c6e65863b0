"""genefl benchmarks: ratios measured side by side in one run (issue 5).

``python benchmarks/run.py --quick`` (under 5 minutes on 2 CPU cores, plus about 2 for the
Flower deployment when flwr and openssl are there) prints a table and,
as its last line, one JSON object with ``engine_vs_bare``, ``genefl_vs_fedavg_round``,
``fisher_vs_epoch``, ``fisher_max_rel_err``, ``rss_10k_vs_100`` and
``flower_sim_vs_engine`` (the engine at its fastest setting on the machine; null unless
the ``flower`` extra is installed: ``pip install -e '.[flower]'``),
``parallel_vs_sequential_round`` (a round's time with 2 worker processes x 1 thread over
1 process x 2 threads) and ``rss_vs_data`` (peak memory of a CIFAR-10-sized run, all its
processes, over the data set's float32 size), plus ``batched_vs_sequential_round`` (no
target: batched client training's round time over the sequential loop's) and
``flower_deploy_vs_engine``
(no target: the same GENE-FL run as a loopback Flower deployment with TLS and SuperNode
authentication, end to end, over the engine's time; null without flwr or openssl).
Without ``--quick`` it runs larger sizes and writes ``benchmarks/RESULTS.md`` with the
machine and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import batched as batched_bench  # noqa: E402
import engine as engine_bench  # noqa: E402
import fisher as fisher_bench  # noqa: E402
import flower as flower_bench  # noqa: E402
import parallel as parallel_bench  # noqa: E402
import store as store_bench  # noqa: E402

TARGETS = {
    "engine_vs_bare": (">=", 0.9),
    "genefl_vs_fedavg_round": ("<=", 1.5),
    "fisher_vs_epoch": ("<=", 2.0),
    "fisher_max_rel_err": ("<=", 1e-5),
    "rss_10k_vs_100": ("<=", 1.2),
    "flower_sim_vs_engine": (">=", 3.0),
    "parallel_vs_sequential_round": ("<=", 0.65),
    "rss_vs_data": ("<=", 1.5),
}


def _meets(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    op, bound = TARGETS[key]
    return "yes" if (value >= bound if op == ">=" else value <= bound) else "NO"


def machine() -> str:
    """One line describing where the figures were taken."""
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
            f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")


def main() -> None:
    """Run the benchmarks; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (under 5 minutes)")
    args = parser.parse_args()
    os.chdir(HERE.parent)
    t0 = time.perf_counter()
    has_flwr = flower_bench.flwr_available()
    if args.quick:
        eng = engine_bench.measure(samples=300, epochs=10, repeats=3)
        fis = fisher_bench.measure(samples=600, repeats=3)
        sto = store_bench.measure(rounds=100, prefill=False)
        mem = store_bench.measure(rounds=100, prefill=False, kind="memory")
        flo = flower_bench.measure(samples=200, epochs=1, rounds=3) if has_flwr else None
        bat = batched_bench.measure(samples=300, epochs=2, repeats=3)
        par = parallel_bench.measure_rounds(samples=600, epochs=2, repeats=3)
        rss = parallel_bench.measure_memory(workers=(2,))
    else:
        eng = engine_bench.measure(samples=1350, epochs=10, repeats=5)
        fis = fisher_bench.measure(samples=1350, repeats=5)
        sto = store_bench.measure(rounds=300, prefill=True)
        mem = store_bench.measure(rounds=300, prefill=True, kind="memory")
        flo = flower_bench.measure(samples=600, epochs=2, rounds=5) if has_flwr else None
        bat = batched_bench.measure(samples=1350, epochs=2, repeats=3)
        par = parallel_bench.measure_rounds(samples=1350, epochs=2, repeats=5)
        rss = parallel_bench.measure_memory(workers=(1, 2))
    summary = {
        "engine_vs_bare": eng["engine_vs_bare"],
        "genefl_vs_fedavg_round": eng["genefl_vs_fedavg_round"],
        "fisher_vs_epoch": fis["fisher_vs_epoch"],
        # exactness of the formulas: float64 copies of the same model and data (in float32
        # a batched forward may break max-pool ties differently from a one-sample one)
        "fisher_max_rel_err": fis["fisher_max_rel_err_f64"],
        "rss_10k_vs_100": sto["rss_10k_vs_100"],
        "flower_sim_vs_engine": flo["flower_sim_vs_engine"] if flo is not None else None,
        # no target: whether --batched-clients pays off on this machine (< 1: faster)
        "batched_vs_sequential_round": bat["batched_vs_sequential_round"],
        # no target: a real deployment (TLS, node auth, one process per message)
        "flower_deploy_vs_engine": flo["flower_deploy_vs_engine"] if flo is not None else None,
        "parallel_vs_sequential_round": par["parallel_vs_sequential_round"],
        "rss_vs_data": rss["rss_vs_data"],
    }
    rows = [
        ("engine_vs_bare", "engine samples/s / bare loop samples/s (FedAvg round)"),
        ("genefl_vs_fedavg_round", "GENE-FL round time / FedAvg round time"),
        ("fisher_vs_epoch", "exact Fisher time / one training epoch"),
        ("fisher_max_rel_err", "max relative error of the fast Fisher vs vmap (float64)"),
        ("rss_10k_vs_100", "peak RSS, 10,000 clients / 100 clients (disk store)"),
        ("flower_sim_vs_engine", "Flower simulation / engine, end to end (FedAvg + GENE-FL)"),
        ("parallel_vs_sequential_round", "round time, 2 workers x 1 thread / 1 x 2 threads"),
        ("rss_vs_data", "peak PSS of a CIFAR-10-sized run / its float32 data"),
    ]
    lines = [f"machine: {machine()}", "",
             f"{'figure':24s} {'value':>10s}  {'target':>8s}  met  meaning"]
    for key, meaning in rows:
        value = summary[key]
        op, bound = TARGETS[key]
        shown = "null" if value is None else f"{value:.3g}"
        lines.append(f"{key:24s} {shown:>10s}  {op}{bound:<7g}  {_meets(key, value):4s} {meaning}")
    lines.append("")
    lines.append(
        f"engine: bare {eng['bare_round_s']:.3f} s, fedavg {eng['fedavg_round_s']:.3f} s, "
        f"genefl {eng['genefl_round_s']:.3f} s per round ({eng['clients']} clients x "
        f"{eng['samples_per_client']} samples x {eng['epochs']} epochs)"
    )
    lines.append(
        f"fisher: epoch {fis['epoch_s']:.3f} s, exact {fis['fisher_s']:.3f} s, vmap "
        f"{fis['vmap_s']:.3f} s ({fis['samples']} samples); float32 max rel err vs vmap "
        f"{fis['fisher_max_rel_err']:.2g} (max-pool ties break differently in batches)"
    )
    lines.append(
        f"store: 100 clients {sto[100]['peak_rss_mb']:.0f} MiB, {sto[100]['round_s'] * 1e3:.1f} "
        f"ms/round; 10,000 clients {sto[10_000]['peak_rss_mb']:.0f} MiB, "
        f"{sto[10_000]['round_s'] * 1e3:.1f} ms/round ({sto['rounds']} rounds, prefill "
        f"{sto['prefill']}); the in-memory store for contrast: "
        f"{mem[100]['peak_rss_mb']:.0f} vs {mem[10_000]['peak_rss_mb']:.0f} MiB "
        f"(x{mem['rss_10k_vs_100']:.2f})"
    )
    if flo is None:
        lines.append("flower: not installed, no figure; pip install -e '.[flower]' to measure it")
    else:
        per = ", ".join(
            f"{m} engine {flo[m]['engine_s']:.2f} s vs Flower {flo[m]['flower_s']:.1f} s "
            f"({flo[m]['flower_rounds_s']:.2f} s rounds only)" for m in flower_bench.METHODS
        )
        lines.append(
            f"flower: {per}; rounds only, Flower / engine x{flo['flower_rounds_vs_engine']:.2f} "
            f"({flo['rounds']} known + {flo['agnostic_rounds']} agnostic rounds, "
            f"{flo['clients']} + {flo['agnostic_clients']} digits clients x "
            f"{flo['samples_per_client']} samples, {flo['epochs']} local epoch(s), Ray, 1 CPU "
            f"per client); byte counts equal: {flo['bytes_match']}, max |accuracy difference| "
            f"{flo['max_accuracy_diff']:.1g}"
        )
        g = flo["genefl"]
        if "deploy_s" in g:
            b = g["bytes"]
            lines.append(
                f"flower deployment (loopback, TLS + SuperNode auth, {flo['clients']} + "
                f"{flo['agnostic_clients']} SuperNodes, GENE-FL): end to end "
                f"{g['deploy_s']:.1f} s (flwr run {g['deploy_run_s']:.1f} s, rounds only "
                f"{g['deploy_rounds_s']:.2f} s) vs engine {g['engine_s']:.2f} s and simulation "
                f"{g['flower_s']:.1f} s ({g['flower_rounds_s']:.2f} s rounds only); x"
                f"{flo['flower_deploy_vs_engine']:.1f} end to end"
            )
            lines.append(
                "flower bytes up/down (GENE-FL, both phases): " + ", ".join(
                    f"{k} {v['up']}/{v['down']}" for k, v in b.items()
                ) + f"; deployment equal to the engine: {g['deploy_bytes_match']}, max "
                f"|accuracy difference| {g['deploy_max_accuracy_diff']:.1g}"
            )
        else:
            lines.append(f"flower deployment: not measured ({flo['deployment']})")
    lines.append(
        f"batched clients (torch.func.vmap, --batched-clients): FedAvg round "
        f"{bat['batched_round_s']:.3f} s vs sequential {bat['sequential_round_s']:.3f} s, "
        f"ratio {bat['batched_vs_sequential_round']:.2f} ({bat['clients']} clients x "
        f"{bat['samples_per_client']} samples x {bat['epochs']} epochs; < 1 means faster)"
    )
    per_method = ", ".join(
        f"{m} {par[m]['parallel_round_s']:.3f} s vs {par[m]['sequential_round_s']:.3f} s "
        f"(pool start {par[m]['pool_start_s']:.1f} s)" for m in ("fedavg", "genefl"))
    lines.append(
        f"workers: round with {par['workers']} workers x 1 thread vs 1 process x "
        f"{par['workers']} threads: {per_method} ({par['clients']} clients x "
        f"{par['samples_per_client']} samples x {par['epochs']} epochs, small CNN, 28x28)"
    )
    if rss["rss_vs_data"] is None:
        lines.append(f"memory: not measured ({rss['why']})")
    else:
        runs = ", ".join(
            f"{k.split('_')[1]} worker(s) {v['peak_pss_mib']:.0f} MiB ({v['seconds']:.0f} s)"
            for k, v in rss.items() if k.startswith("workers_"))
        lines.append(
            f"memory: CIFAR-10-sized run (60,000 x 32x32x3, 20 + 20 clients), peak PSS of "
            f"all its processes: {runs}; data {rss['data_uint8_mib']:.0f} MiB uint8, "
            f"{rss['data_float32_mib']:.0f} MiB as float32"
        )
    if flo is not None:
        lines.append("flower: engine setting used (workers x threads): " + ", ".join(
            f"{m} {flo[m]['engine_setting']} (" + ", ".join(
                f"{k} {v:.2f} s" for k, v in flo[m]["engine_tried_s"].items()) + ")"
            for m in flower_bench.METHODS))
    lines.append(f"total {time.perf_counter() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (HERE / "RESULTS.md").write_text(
            "# Benchmark results\n\nWritten by `python benchmarks/run.py` (full mode).\n\n```\n"
            + text + "\n```\n\n```json\n" + json.dumps(summary, indent=2) + "\n```\n"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
