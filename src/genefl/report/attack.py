"""Tables, CSV, JSON and the image grid of ``genefl attack`` (the paper's Fig. 4)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from genefl.privacy.experiment import NOISE_ROW, MethodAttack, noise_baseline
from genefl.report.compare import markdown_table, text_table, write_csv

ATTACK_COLUMNS = (
    "method", "exchanges", "shared_layers", "num_layers", "shared_bytes", "images",
    "psnr_mean", "psnr_min", "psnr_max", "label_recovery", "matching_loss_mean", "seconds",
    "note",
)
ATTACK_FILES = ("attack.csv", "attack.md", "attack.json", "attack_grid.png")


def attack_rows(attacks: Sequence[MethodAttack], noise_psnr: Sequence[float]) -> list[dict]:
    """One summary row per method plus the random-noise control; PSNR in dB, label
    recovery as a fraction; NaN where nothing was attacked.
    """
    rows = []
    for a in attacks:
        values = np.array([r.psnr for r in a.results], dtype=float)
        rows.append({
            "method": a.method,
            "exchanges": a.exchanges,
            "shared_layers": a.shared_layer_count,
            "num_layers": a.num_layers,
            "shared_bytes": a.shared_bytes,
            "images": len(a.results),
            "psnr_mean": float(values.mean()) if values.size else math.nan,
            "psnr_min": float(values.min()) if values.size else math.nan,
            "psnr_max": float(values.max()) if values.size else math.nan,
            "label_recovery": (
                float(np.mean([r.label_recovered for r in a.results])) if a.results else math.nan
            ),
            "matching_loss_mean": (
                float(np.mean([r.matching_loss for r in a.results])) if a.results else math.nan
            ),
            "seconds": a.seconds,
            "note": a.note,
        })
    noise = np.array(noise_psnr, dtype=float)
    rows.append({
        "method": NOISE_ROW, "exchanges": "control: uniform random images, no attack",
        "shared_layers": 0, "num_layers": attacks[0].num_layers if attacks else 0,
        "shared_bytes": 0.0, "images": int(noise.size),
        "psnr_mean": float(noise.mean()) if noise.size else math.nan,
        "psnr_min": float(noise.min()) if noise.size else math.nan,
        "psnr_max": float(noise.max()) if noise.size else math.nan,
        "label_recovery": math.nan, "matching_loss_mean": math.nan, "seconds": 0.0, "note": "",
    })
    return rows


def write_attack_csv(rows: Sequence[dict], path: Path | str) -> Path:
    """``attack.csv``: one row per method (PSNR in dB, bytes, fractions; NaN -> empty)."""
    return write_csv(rows, ATTACK_COLUMNS, path)


def _db(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def attack_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the PSNR table."""
    headers = [
        "method", "shares", "layers shared", "shared MB", "images", "PSNR mean (dB)",
        "PSNR min (dB)", "PSNR max (dB)", "labels recovered",
    ]
    cells = []
    for r in rows:
        labels = r["label_recovery"]
        cells.append([
            r["method"], r["exchanges"], f"{r['shared_layers']:g}/{r['num_layers']}",
            f"{r['shared_bytes'] / 2**20:.4f}", str(r["images"]), _db(r["psnr_mean"]),
            _db(r["psnr_min"]), _db(r["psnr_max"]),
            "n/a" if math.isnan(labels) else f"{100 * labels:.0f} %",
        ])
    return headers, cells


def format_attack_table(rows: Sequence[dict]) -> str:
    """The table for a terminal."""
    return text_table(*attack_table(rows))


def write_attack_markdown(rows: Sequence[dict], path: Path | str, preamble: str = "") -> Path:
    """``attack.md``: the PSNR table with a short explanation."""
    path = Path(path)
    text = (
        "# iDLG gradient inversion: PSNR of reconstructed training images\n\n"
        + (preamble + "\n\n" if preamble else "")
        + markdown_table(*attack_table(rows))
        + "\n\nPSNR = 10 log10(1 / MSE) on [0, 1] images; higher means a closer "
        "reconstruction. `random-noise` is uniform random images scored the same way.\n"
    )
    path.write_text(text)
    return path


def write_attack_json(attacks: Sequence[MethodAttack], path: Path | str) -> Path:
    """``attack.json``: every attacked image (victim, label, PSNR, loss, shared layers)."""
    data = [
        {
            "method": a.method, "shared_layers": a.shared_layers, "note": a.note,
            "images": [
                {
                    "index": r.index, "client_id": r.client_id, "label": r.label,
                    "recovered_label": r.recovered_label, "label_recovered": r.label_recovered,
                    "psnr_db": r.psnr if math.isfinite(r.psnr) else str(r.psnr),
                    "matching_loss": r.matching_loss, "lbfgs_steps": r.steps,
                    "labels_inferred": r.labels_inferred,
                }
                for r in a.results
            ],
        }
        for a in attacks
    ]
    Path(path).write_text(json.dumps(data, indent=1))
    return Path(path)


def _show(ax: Any, image: np.ndarray) -> None:
    """An image ``(C, H, W)`` in [0, 1] on ``ax`` without ticks."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.transpose(image, (1, 2, 0)).clip(0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attack_grid(
    attacks: Sequence[MethodAttack], noise_psnr: Sequence[float], path: Path | str,
    max_columns: int = 12,
) -> Path:
    """The image grid: originals in the first row, one row per method, PSNR (dB) under
    each reconstruction (at most ``max_columns`` images).
    """
    path = Path(path)
    source = next((a for a in attacks if a.results), None)
    originals = [r.original.numpy() for r in source.results] if source else []
    columns = max(1, min(len(originals), max_columns))
    rows = [("original", [(o, "") for o in originals[:columns]])]
    for a in attacks:
        by_index = {r.index: r for r in a.results}
        cells = []
        for i in range(columns):
            r = by_index.get(source.results[i].index) if source else None
            cells.append((r.image.numpy(), f"{_db(r.psnr)} dB") if r else (None, "n/a"))
        rows.append((a.method, cells))
    fig = Figure(figsize=(1.3 * columns + 1.6, 1.45 * len(rows)), dpi=120)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for row, (label, cells) in zip(axes, rows):
        for col, ax in enumerate(row):
            image, caption = cells[col] if col < len(cells) else (None, "")
            if image is None:
                ax.axis("off")
                ax.text(0.5, 0.5, caption, ha="center", va="center", fontsize=7)
            else:
                _show(ax, image)
                if caption:
                    ax.set_xlabel(caption, fontsize=7, labelpad=2)
        row[0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(
        "iDLG reconstructions (PSNR in dB under each image; random noise scores "
        f"{_db(float(np.mean(noise_psnr))) if len(noise_psnr) else 'n/a'} dB on average)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    fig.clear()
    return path


def write_attack_report(
    attacks: Sequence[MethodAttack], seed: int, out: Path | str, preamble: str = ""
) -> list[dict]:
    """Score the random-noise control on the attacked originals and write every file of
    :data:`ATTACK_FILES` into ``out``; returns the table rows.
    """
    out = Path(out)
    source = next((a for a in attacks if a.results), None)
    noise = noise_baseline([r.original for r in source.results], seed) if source else []
    rows = attack_rows(attacks, noise)
    write_attack_csv(rows, out / "attack.csv")
    write_attack_markdown(rows, out / "attack.md", preamble)
    write_attack_json(attacks, out / "attack.json")
    plot_attack_grid(attacks, noise, out / "attack_grid.png")
    return rows
