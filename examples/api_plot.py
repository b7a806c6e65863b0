"""The Python API and a plot: ``genefl.compare`` returns every run; matplotlib draws them.

Compares FedAvg and GENE-FL over two seeds (one with ``--tiny``; files in OUT/compare/, as
`genefl compare` writes them) and plots each method's test accuracy per round, known then
agnostic phase, mean over the seeds, into OUT/accuracy.png.

Usage: python examples/api_plot.py [--tiny] [--out OUT]
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _common import parse_args, scale  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

import genefl  # noqa: E402


def plot_accuracy(result: genefl.CompareResult, path: Path) -> Path:
    """Mean accuracy per round of each method (known rounds, then agnostic rounds)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, runs in result.runs.items():
        curves = np.array([
            r["known_round_accuracy"] + r["agnostic_round_accuracy"] for r in runs
        ], dtype=float)
        rounds = np.arange(1, curves.shape[1] + 1)
        ax.plot(rounds, 100 * np.nanmean(curves, axis=0), marker="o", label=method)
    first = next(iter(result.runs.values()))
    known = len(first[0]["known_round_accuracy"])
    ax.axvline(known + 0.5, color="grey", linestyle=":", label="new clients join")
    ax.set(xlabel="round", ylabel="test accuracy (%)",
           title=f"{', '.join(result.methods)}: mean of {len(first)} seed(s)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    args = parse_args(__doc__, "api_plot")
    result = genefl.compare(
        methods=["fedavg", "genefl"], repeats=1 if args.tiny else 2,
        output_dir=args.out / "compare", overwrite=True, **scale(args.tiny),
    )
    print(result.tables())
    print(f"plot: {plot_accuracy(result, args.out / 'accuracy.png')}")
