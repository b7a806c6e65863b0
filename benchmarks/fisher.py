"""Cost of the diagonal Fisher relative to one local training epoch (issue 5).

On the small CNN with ``samples`` Fashion-MNIST-shaped random images (1x28x28, 10
classes), times side by side in one process: one training epoch as GENE-FL's clients run
it (``train_local``: batch 64, SGD lr 0.01 momentum 0.9, fresh optimiser), the fast exact
Fisher (``method="exact"``) and the ``vmap`` reference. Reports median times over
``repeats`` interleaved runs, their ratios to the epoch and the fast Fisher's largest
relative deviation from the reference, in float32 as timed and, untimed, in float64.

Run ``python benchmarks/fisher.py [--samples 600] [--repeats 3]``; the last printed line
is the result as JSON. Other code can call :func:`measure`.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch

from genefl.algorithms.base import ClientData
from genefl.engine.local import LocalSettings, train_local
from genefl.method.fisher import fisher_diagonal
from genefl.models import build_model


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _max_rel_err(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """``max`` over parameters of ``max|got - ref| / max|ref|``."""
    return max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max()) for k in ref)


def measure(samples: int = 600, repeats: int = 3, chunk_size: int = 128) -> dict[str, float]:
    """Median seconds of one epoch, the fast and the vmap Fisher, and their ratios.

    Returns keys ``epoch_s``, ``fisher_s``, ``vmap_s``, ``fisher_vs_epoch`` (fast /
    epoch), ``vmap_vs_epoch``, ``fisher_max_rel_err`` (max over parameters of
    ``max|fast - vmap| / max|vmap|`` of the timed float32 runs), ``fisher_max_rel_err_f64``
    (the same for float64 copies of model and data), plus ``samples``, ``repeats`` and
    ``threads``.
    """
    g = torch.Generator().manual_seed(0)
    model = build_model("cnn", 1, 10, 28, g)
    x = torch.randn(samples, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (samples,), generator=g)
    data = ClientData(x, y)
    settings = LocalSettings(1, 64, 0.01, 0.9)
    # one warm-up epoch: realistic (non-initial) batch-norm statistics, warm kernels
    train_local(model, data, settings, None, torch.Generator().manual_seed(1))
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("exact", "vmap"):  # warm-up
        fisher_diagonal(model, x[:8], y[:8], chunk_size, method=method)

    fast: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] = {}
    times: dict[str, list[float]] = {"epoch": [], "fisher": [], "vmap": []}
    for _ in range(repeats):  # interleaved, so that a load change hits all three alike
        model.load_state_dict(trained)
        times["epoch"].append(_seconds(lambda: train_local(
            model, data, settings, None, torch.Generator().manual_seed(2)
        )))
        model.load_state_dict(trained)
        times["fisher"].append(_seconds(lambda: fast.update(
            fisher_diagonal(model, x, y, chunk_size)
        )))
        times["vmap"].append(_seconds(lambda: ref.update(
            fisher_diagonal(model, x, y, chunk_size, method="vmap")
        )))
    epoch_s, fisher_s, vmap_s = (statistics.median(times[k]) for k in ("epoch", "fisher", "vmap"))
    # the same comparison in float64 (untimed): float32 rounding can flip a max-pool's
    # choice between near-tied inputs differently in a batched and a one-sample forward,
    # which changes that sample's (sub)gradient; float64 leaves only the methods' rounding
    model64, x64 = copy.deepcopy(model).double(), x.double()
    fast64 = fisher_diagonal(model64, x64, y, chunk_size)
    ref64 = fisher_diagonal(model64, x64, y, chunk_size, method="vmap")
    return {
        "samples": samples,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "epoch_s": epoch_s,
        "fisher_s": fisher_s,
        "vmap_s": vmap_s,
        "fisher_vs_epoch": fisher_s / epoch_s,
        "vmap_vs_epoch": vmap_s / epoch_s,
        "fisher_max_rel_err": _max_rel_err(fast, ref),
        "fisher_max_rel_err_f64": _max_rel_err(fast64, ref64),
    }


def main() -> None:
    """Command-line entry: print a table and the result dict as JSON on the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=128)
    args = parser.parse_args()
    result = measure(args.samples, args.repeats, args.chunk_size)
    print(f"small CNN, {result['samples']} samples, median of {result['repeats']}, "
          f"{result['threads']} threads")
    print(f"{'what':<14}{'seconds':>10}{'x epoch':>10}")
    print(f"{'epoch':<14}{result['epoch_s']:>10.3f}{1.0:>10.2f}")
    print(f"{'fisher exact':<14}{result['fisher_s']:>10.3f}{result['fisher_vs_epoch']:>10.2f}")
    print(f"{'fisher vmap':<14}{result['vmap_s']:>10.3f}{result['vmap_vs_epoch']:>10.2f}")
    print(f"max rel err exact vs vmap: float32 {result['fisher_max_rel_err']:.2e}, "
          f"float64 {result['fisher_max_rel_err_f64']:.2e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
