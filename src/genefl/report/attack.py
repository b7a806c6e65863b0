"""Tables, CSV, JSON and the image grid of ``genefl attack`` (the paper's Fig. 4, by
round and attack).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from genefl.privacy.experiment import ATTACK_NAMES, NOISE_ROW, MethodAttack, noise_baseline
from genefl.privacy.metrics import recognisable_share
from genefl.report.compare import markdown_table, text_table, write_csv

ATTACK_COLUMNS = (
    "method", "round", "attack", "exchanges", "shared_layers", "num_layers", "shared_bytes",
    "images", "psnr_mean", "psnr_min", "psnr_max", "ssim_mean", "ssim_min", "ssim_max",
    "recognisable", "recognisable_psnr", "label_recovery", "matching_loss_mean", "seconds",
    "note",
)
ATTACK_FILES = ("attack.csv", "attack.md", "attack.json", "attack_grid.png")
#: the attack column of the random-noise rows
NO_ATTACK = "none"

#: noise control of each round: ``round -> [(psnr, ssim), ...]``
Noise = dict[int, list[tuple[float, float]]]


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=float)
    if not array.size:
        return math.nan, math.nan, math.nan
    return float(array.mean()), float(array.min()), float(array.max())


def _row(method: str, rnd: int, attack: str, psnrs: Sequence[float], ssims: Sequence[float],
         threshold: float, **rest: Any) -> dict:
    p_mean, p_min, p_max = _stats(psnrs)
    s_mean, s_min, s_max = _stats(ssims)
    return {
        "method": method, "round": rnd, "attack": attack, **rest, "images": len(psnrs),
        "psnr_mean": p_mean, "psnr_min": p_min, "psnr_max": p_max,
        "ssim_mean": s_mean, "ssim_min": s_min, "ssim_max": s_max,
        "recognisable": recognisable_share(psnrs, threshold), "recognisable_psnr": threshold,
    }


def attack_rows(attacks: Sequence[MethodAttack], noise: Noise, threshold: float) -> list[dict]:
    """One summary row per method, round and attack, grouped by round, each round closed
    by its random-noise control; PSNR in dB, SSIM, the share of images above
    ``threshold`` dB and label recovery as fractions; NaN where nothing was attacked.
    """
    rows = []
    num_layers = attacks[0].num_layers if attacks else 0
    for rnd in sorted({a.round for a in attacks}):
        for a in (a for a in attacks if a.round == rnd):
            rows.append(_row(
                a.method, rnd, a.attack, [r.psnr for r in a.results],
                [r.ssim for r in a.results], threshold, exchanges=a.exchanges,
                shared_layers=a.shared_layer_count, num_layers=a.num_layers,
                shared_bytes=a.shared_bytes,
                label_recovery=(
                    float(np.mean([r.label_recovered for r in a.results]))
                    if a.results else math.nan
                ),
                matching_loss_mean=(
                    float(np.mean([r.matching_loss for r in a.results]))
                    if a.results else math.nan
                ),
                seconds=a.seconds, note=a.note,
            ))
        pairs = noise.get(rnd, [])
        rows.append(_row(
            NOISE_ROW, rnd, NO_ATTACK, [p for p, _ in pairs], [s for _, s in pairs], threshold,
            exchanges="control: uniform random images, no attack", shared_layers=0,
            num_layers=num_layers, shared_bytes=0.0, label_recovery=math.nan,
            matching_loss_mean=math.nan, seconds=0.0, note="",
        ))
    return rows


def write_attack_csv(rows: Sequence[dict], path: Path | str) -> Path:
    """``attack.csv``: one row per method, round and attack (PSNR in dB, SSIM, bytes,
    fractions; NaN -> empty).
    """
    return write_csv(rows, ATTACK_COLUMNS, path)


def _db(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _share(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f} %"


def attack_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the table."""
    threshold = rows[0]["recognisable_psnr"] if rows else math.nan
    headers = [
        "round", "method", "attack", "layers shared", "shared MB", "images",
        "PSNR mean (dB)", "PSNR min-max (dB)", "SSIM mean", f"> {threshold:g} dB",
        "labels recovered",
    ]
    cells = []
    for r in rows:
        cells.append([
            str(r["round"]), r["method"], r["attack"], f"{r['shared_layers']:g}/{r['num_layers']}",
            f"{r['shared_bytes'] / 2**20:.4f}", str(r["images"]), _db(r["psnr_mean"]),
            f"{_db(r['psnr_min'])} - {_db(r['psnr_max'])}",
            "n/a" if math.isnan(r["ssim_mean"]) else f"{r['ssim_mean']:.3f}",
            _share(r["recognisable"]), _share(r["label_recovery"]),
        ])
    return headers, cells


def format_attack_table(rows: Sequence[dict]) -> str:
    """The table for a terminal."""
    return text_table(*attack_table(rows))


def write_attack_markdown(rows: Sequence[dict], path: Path | str, preamble: str = "") -> Path:
    """``attack.md``: the table with a short explanation."""
    path = Path(path)
    threshold = rows[0]["recognisable_psnr"] if rows else math.nan
    shares = {r["method"]: r["exchanges"] for r in rows}
    text = (
        "# Gradient inversion: how close the reconstructed training images are\n\n"
        + (preamble + "\n\n" if preamble else "")
        + markdown_table(*attack_table(rows))
        + "\n\nRound: the known round after which the victims were attacked. Attacks: "
        + ", ".join(f"`{k}` {v}" for k, v in ATTACK_NAMES.items())
        + ". PSNR = 10 log10(1 / MSE) on [0, 1] images (higher: closer); SSIM: "
        "scikit-image's structural similarity (1: identical); "
        f"`> {threshold:g} dB`: the share of images whose PSNR is above {threshold:g} dB "
        "(recognisable). `random-noise` is uniform random images scored the same way.\n\n"
        "What each method shares:\n\n"
        + "\n".join(f"- `{m}`: {s}" for m, s in shares.items())
        + "\n"
    )
    path.write_text(text)
    return path


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def write_attack_json(attacks: Sequence[MethodAttack], path: Path | str) -> Path:
    """``attack.json``: every attacked image (round, attack, victim, label, PSNR, SSIM,
    loss, shared layers).
    """
    data = [
        {
            "method": a.method, "round": a.round, "attack": a.attack,
            "shared_layers": a.shared_layers, "note": a.note,
            "images": [
                {
                    "index": r.index, "client_id": r.client_id, "label": r.label,
                    "recovered_label": r.recovered_label, "label_recovered": r.label_recovered,
                    "psnr_db": _number(r.psnr), "ssim": _number(r.ssim),
                    "matching_loss": _number(r.matching_loss), "steps": r.steps,
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
    attacks: Sequence[MethodAttack], noise: Noise, path: Path | str, max_columns: int = 12,
) -> Path:
    """The image grid: one block of columns per attacked round (that round's originals on
    top), one row per method and attack, PSNR (dB) and SSIM under each reconstruction (at
    most ``max_columns`` images in all, shared out between the rounds).
    """
    path = Path(path)
    rounds = sorted({a.round for a in attacks})
    per_round = max(1, max_columns // max(1, len(rounds)))
    originals: dict[int, list[Any]] = {}
    for rnd in rounds:
        source = next((a for a in attacks if a.round == rnd and a.results), None)
        originals[rnd] = source.results[:per_round] if source else []
    columns = [(rnd, o) for rnd in rounds for o in originals[rnd]]
    labels = list(dict.fromkeys((a.method, a.attack) for a in attacks))
    found = {(a.method, a.attack, a.round): {r.index: r for r in a.results} for a in attacks}
    rows: list[tuple[str, list[tuple[np.ndarray | None, str]]]] = [
        ("original", [(o.original.numpy(), f"round {rnd}") for rnd, o in columns])
    ]
    for method, attack in labels:
        cells: list[tuple[np.ndarray | None, str]] = []
        for rnd, o in columns:
            r = found.get((method, attack, rnd), {}).get(o.index)
            cells.append((r.image.numpy(), f"{_db(r.psnr)} dB / {r.ssim:.2f}") if r
                         else (None, "n/a"))
        rows.append((f"{method}\n{attack}", cells))
    width = max(1, len(columns))
    fig = Figure(figsize=(1.2 * width + 1.8, 1.4 * len(rows)), dpi=120)
    axes = fig.subplots(len(rows), width, squeeze=False)
    for row, (label, cells) in zip(axes, rows):
        for col, ax in enumerate(row):
            image, caption = cells[col] if col < len(cells) else (None, "")
            if image is None:
                ax.axis("off")
                ax.text(0.5, 0.5, caption, ha="center", va="center", fontsize=7)
            else:
                _show(ax, image)
                if caption:
                    ax.set_xlabel(caption, fontsize=6, labelpad=2)
        row[0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    floor = [p for pairs in noise.values() for p, _ in pairs]
    fig.suptitle(
        "Reconstructions by known round (PSNR in dB / SSIM under each image; random noise "
        f"scores {_db(float(np.mean(floor))) if floor else 'n/a'} dB on average)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    fig.clear()
    return path


def noise_control(attacks: Sequence[MethodAttack], seed: int) -> Noise:
    """The random-noise control of each round, scored on that round's originals."""
    noise: Noise = {}
    for rnd in sorted({a.round for a in attacks}):
        source = next((a for a in attacks if a.round == rnd and a.results), None)
        originals = [r.original for r in source.results] if source else []
        noise[rnd] = noise_baseline(originals, seed, rnd)
    return noise


def write_attack_report(
    attacks: Sequence[MethodAttack], seed: int, out: Path | str, threshold: float,
    preamble: str = "",
) -> list[dict]:
    """Score the random-noise control on the attacked originals and write every file of
    :data:`ATTACK_FILES` into ``out``; returns the table rows.
    """
    out = Path(out)
    noise = noise_control(attacks, seed)
    rows = attack_rows(attacks, noise, threshold)
    write_attack_csv(rows, out / "attack.csv")
    write_attack_markdown(rows, out / "attack.md", preamble)
    write_attack_json(attacks, out / "attack.json")
    plot_attack_grid(attacks, noise, out / "attack_grid.png")
    return rows
