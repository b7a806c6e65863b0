"""Plain-text summary table of a run's results."""

from __future__ import annotations

import math
from typing import Any

GIB = 2**30
MIB = 2**20


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f} %"


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """``(label, value)`` rows of the end-of-run table (units in the labels)."""
    up, full = results["upload_bytes"], results["full_model_upload_bytes"]
    share = f" ({100 * up / full:.2f} % of full-model)" if full else ""
    return [
        ("method", str(results["method"])),
        ("dataset", str(results["dataset"])),
        ("known-client accuracy", _pct(results["known_accuracy"])),
        ("known-client accuracy, server view", _pct(results.get("known_accuracy_server"))),
        ("upload, known phase (GB = 2^30 B)", f"{up / GIB:.6f}{share}"),
        ("download, known phase (GB)", f"{results['download_bytes'] / GIB:.6f}"),
        ("learnGene per cluster (MB = 2^20 B)", f"{results['learngene_bytes'] / MIB:.4f}"),
        ("model size (MB)", f"{results['model_bytes'] / MIB:.4f}"),
        ("agnostic accuracy, round 0", _pct(results["agnostic_accuracy_round0"])),
        ("agnostic accuracy, mean of last 10 rounds", _pct(results["agnostic_accuracy_last10"])),
        ("agnostic accuracy, last 10 rounds, server view",
         _pct(results.get("agnostic_accuracy_last10_server"))),
        ("wall time (s)", f"{results['wall_seconds']:.1f}"),
    ]


def format_summary(results: dict[str, Any]) -> str:
    """The summary as an aligned two-column table."""
    rows = summary_rows(results)
    width = max(len(label) for label, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    body = "\n".join(f"{label.ljust(width)} | {value}" for label, value in rows)
    return f"{line}\n{body}\n{line}"
