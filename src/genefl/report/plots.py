"""Plots of ``genefl compare`` (paper's Figs. 3, 5 and 6), one line per method.

Uses :class:`matplotlib.figure.Figure` directly (no pyplot, no global state), so the
figures are freed when they go out of scope and any backend setting is left alone.
``runs`` maps a method name to one results dict per seed, as in
:mod:`genefl.report.compare`. Lines are the mean over seeds; with more than one seed a
shaded band shows ± the population std. Missing values (NaN/None) leave gaps.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

GIB = 2**30
MIB = 2**20

Runs = dict[str, list[dict[str, Any]]]

DPI = 120
FIGSIZE = (8.0, 4.8)
COLOURS = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22",
]
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<"]

KNOWN_ACCURACY_FILE = "known_accuracy.png"
CUMULATIVE_UPLOAD_FILE = "cumulative_upload.png"
AGNOSTIC_ACCURACY_FILE = "agnostic_accuracy.png"


# --------------------------------------------------------------------------- data


def seed_matrix(seeds: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """``(num_seeds, rounds)`` float array of the per-round list ``key``.

    Seeds are truncated to the shortest list; ``None`` becomes NaN. Shape ``(0, 0)`` if
    there are no seeds.
    """
    lists = [list(res.get(key) or []) for res in seeds]
    if not lists:
        return np.zeros((0, 0))
    length = min(len(values) for values in lists)
    return np.array(
        [[np.nan if v is None else float(v) for v in values[:length]] for values in lists],
        dtype=float,
    ).reshape(len(lists), length)


def mean_std(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-round mean and population std over seeds (axis 0), ignoring NaN (NaN if all are)."""
    if matrix.size == 0:
        return np.zeros(matrix.shape[1:]), np.zeros(matrix.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix, axis=0), np.nanstd(matrix, axis=0)


def cumulative_upload(seeds: Sequence[dict[str, Any]]) -> np.ndarray:
    """``(num_seeds, rounds)`` cumulative known-phase upload in bytes (missing rounds = 0 B)."""
    per_round = seed_matrix(seeds, "known_round_upload_bytes")
    return np.cumsum(np.nan_to_num(per_round, nan=0.0), axis=1)


def upload_unit(max_bytes: float) -> tuple[float, str]:
    """``(bytes per unit, axis label)``: GB (2^30 B) from 1 GB upwards, else MB (2^20 B)."""
    if max_bytes >= GIB:
        return float(GIB), "Cumulative upload (GB, 2^30 bytes)"
    return float(MIB), "Cumulative upload (MB, 2^20 bytes)"


# --------------------------------------------------------------------------- drawing


def line_style(index: int) -> dict[str, Any]:
    """Colour, line style and marker of the ``index``-th method (distinct for 10 methods)."""
    return {
        "color": COLOURS[index % len(COLOURS)],
        "linestyle": LINESTYLES[index % len(LINESTYLES)],
        "marker": MARKERS[index % len(MARKERS)],
    }


def _draw(
    ax: Axes, index: int, label: str, x: np.ndarray, mean: np.ndarray, std: np.ndarray,
    repeats: int,
) -> None:
    """One method's mean line (with markers on ~10 points) and its ±std band."""
    style = line_style(index)
    if mean.size == 0 or np.all(np.isnan(mean)):
        # Keep the method in the legend even without data.
        ax.plot([], [], label=f"{label} (no data)", linewidth=1.5, markersize=5, **style)
        return
    ax.plot(
        x, mean, label=label, linewidth=1.5, markersize=5,
        markevery=max(1, len(x) // 10), **style,
    )
    if repeats > 1:
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15,
                        linewidth=0)


def _new_axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, ax


#: a drawn figure and the axes its legend goes beside
Drawn = tuple[Figure, Axes]


def _finish(fig: Figure, ax: Axes) -> None:
    """Legend outside on the right of ``ax``, tight layout."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                  frameon=False)
    fig.tight_layout()


def _save(fig: Figure, ax: Axes, path: Path | str) -> Path:
    """Legend outside on the right, tight layout, PNG at :data:`DPI`; the figure is cleared."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _finish(fig, ax)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    fig.clear()
    return path


def figure_png(drawn: Drawn) -> bytes:
    """A drawn figure as PNG bytes at :data:`DPI`, in memory; the figure is cleared."""
    fig, ax = drawn
    _finish(fig, ax)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    fig.clear()
    return buffer.getvalue()


def _eval_figure(runs: Runs, phase: str, title: str, xlabel: str, start: int) -> Drawn:
    """Every client of the phase scored per evaluated round, two panels: personalised and
    server view (mean over seeds, ± std band); rounds numbered from ``start``.
    """
    fig = Figure(figsize=(FIGSIZE[0] * 1.6, FIGSIZE[1]), dpi=DPI)
    axes = fig.subplots(1, 2, sharey=True)
    views = (("", "personalised view (own models)"), ("_server", "server view"))
    for ax, (suffix, name) in zip(axes, views):
        ax.set_title(f"{title}: {name}")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for index, (method, seeds) in enumerate(runs.items()):
            mean, std = mean_std(100.0 * seed_matrix(seeds, f"{phase}_eval_accuracy{suffix}"))
            rounds = list((seeds[0].get(f"{phase}_eval_rounds") or []) if seeds else [])
            x = np.asarray(rounds[: mean.size], dtype=float) + start
            _draw(ax, index, method, x, mean[: x.size], std[: x.size], len(seeds))
    axes[0].set_ylabel("Test accuracy, every client (%)")
    return fig, axes[1]


def _has_evaluations(runs: Runs, phase: str) -> bool:
    return any(res.get(f"{phase}_eval_rounds") for seeds in runs.values() for res in seeds)


def _accuracy_figure(
    runs: Runs, key: str, title: str, xlabel: str, ylabel: str, start: int,
) -> Drawn:
    """Mean per-round accuracy (%) of every method; rounds numbered from ``start``."""
    fig, ax = _new_axes(title, xlabel, ylabel)
    for index, (method, seeds) in enumerate(runs.items()):
        mean, std = mean_std(100.0 * seed_matrix(seeds, key))
        x = np.arange(start, start + mean.size)
        _draw(ax, index, method, x, mean, std, len(seeds))
    return fig, ax


# --------------------------------------------------------------------------- figures


def known_accuracy_figure(runs: Runs) -> Drawn:
    """Known-phase test accuracy (%) of every known client per evaluated round, both views,
    rounds numbered from 1 (paper's Fig. 6); results without those scorings: the round's
    participants.
    """
    if _has_evaluations(runs, "known"):
        return _eval_figure(runs, "known", "Known clients", "Round (known phase)", 1)
    return _accuracy_figure(
        runs, "known_round_accuracy",
        title="Known clients: test accuracy per round",
        xlabel="Round (known phase)", ylabel="Test accuracy (%)", start=1,
    )


def agnostic_accuracy_figure(runs: Runs) -> Drawn:
    """New clients' test accuracy (%) per evaluated agnostic round, from round 0, both
    views (paper's Fig. 3): every agnostic client that has joined; results without those
    scorings: the round's participants.
    """
    if _has_evaluations(runs, "agnostic"):
        return _eval_figure(runs, "agnostic", "New clients",
                            "Round (agnostic phase, 0 = after initialisation + one update)", 0)
    return _accuracy_figure(
        runs, "agnostic_round_accuracy",
        title="Agnostic clients: test accuracy per round",
        xlabel="Round (agnostic phase, 0 = after initialisation + one local update)",
        ylabel="Test accuracy of new clients (%)", start=0,
    )


def cumulative_upload_figure(runs: Runs) -> Drawn:
    """Cumulative known-phase upload per round in MB or GB, whichever fits (paper's Fig. 5)."""
    curves = {method: cumulative_upload(seeds) for method, seeds in runs.items()}
    peak = max((float(np.max(c)) for c in curves.values() if c.size), default=0.0)
    scale, ylabel = upload_unit(peak)
    fig, ax = _new_axes(
        "Known phase: cumulative upload of all clients", "Round (known phase)", ylabel
    )
    for index, (method, seeds) in enumerate(runs.items()):
        mean, std = mean_std(curves[method] / scale)
        x = np.arange(1, 1 + mean.size)
        _draw(ax, index, method, x, mean, std, len(seeds))
    return fig, ax


# --------------------------------------------------------------------------- public plots


def plot_known_accuracy(runs: Runs, path: Path | str) -> Path:
    """Write :func:`known_accuracy_figure` to ``path``."""
    return _save(*known_accuracy_figure(runs), path)


def plot_agnostic_accuracy(runs: Runs, path: Path | str) -> Path:
    """Write :func:`agnostic_accuracy_figure` to ``path``."""
    return _save(*agnostic_accuracy_figure(runs), path)


def plot_cumulative_upload(runs: Runs, path: Path | str) -> Path:
    """Write :func:`cumulative_upload_figure` to ``path``."""
    return _save(*cumulative_upload_figure(runs), path)


def write_plots(runs: Runs, out_dir: Path | str) -> list[Path]:
    """Write ``known_accuracy.png``, ``cumulative_upload.png``, ``agnostic_accuracy.png``."""
    out_dir = Path(out_dir)
    return [
        plot_known_accuracy(runs, out_dir / KNOWN_ACCURACY_FILE),
        plot_cumulative_upload(runs, out_dir / CUMULATIVE_UPLOAD_FILE),
        plot_agnostic_accuracy(runs, out_dir / AGNOSTIC_ACCURACY_FILE),
    ]
