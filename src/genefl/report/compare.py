"""Tables of ``genefl compare``: several methods, several seeds each.

``runs`` maps a method name to one results dict per seed (the dict that
``genefl.engine.simulation`` returns); the insertion order of the methods is the
order of the table rows. Accuracies are fractions in [0, 1] in the data and in
``compare.csv``, and percent in the printed tables. Bytes are float32 wire bytes;
GB = 2**30 bytes and MB = 2**20 bytes.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GIB = 2**30
MIB = 2**20

Runs = dict[str, list[dict[str, Any]]]

#: Per-seed numeric keys averaged over seeds, and whether a ``<key>_std`` column goes with it.
_NUMERIC: list[tuple[str, bool]] = [
    ("upload_bytes", True),
    ("download_bytes", False),
    ("known_accuracy", True),
    ("known_accuracy_server", True),
    ("init_bytes", True),
    ("learngene_bytes", False),
    ("agnostic_accuracy_round0", True),
    ("agnostic_accuracy_round0_server", True),
    ("agnostic_accuracy_last10", True),
    ("agnostic_accuracy_last10_server", True),
    ("model_bytes", False),
    ("wall_seconds", False),
]

COMPARE_COLUMNS: list[str] = [
    "method",
    "exchanges",
    "initialises",
    "repeats",
    "upload_bytes",
    "upload_bytes_std",
    "download_bytes",
    "known_accuracy",
    "known_accuracy_std",
    "known_accuracy_server",
    "known_accuracy_server_std",
    "init_bytes",
    "init_bytes_std",
    "learngene_bytes",
    "agnostic_accuracy_round0",
    "agnostic_accuracy_round0_std",
    "agnostic_accuracy_round0_server",
    "agnostic_accuracy_round0_server_std",
    "agnostic_accuracy_last10",
    "agnostic_accuracy_last10_std",
    "agnostic_accuracy_last10_server",
    "agnostic_accuracy_last10_server_std",
    "model_bytes",
    "wall_seconds",
]

KNOWN_TITLE = "Known phase (paper's Tables I/II): upload and accuracy of known clients"
AGNOSTIC_TITLE = (
    "Agnostic phase (paper's Tables III/IV): initialisation cost and accuracy of new clients"
)
KNOWN_HEADERS = ["Method", "Exchanged", "Upload (GB)", "Accuracy (%)", "Server view (%)"]
AGNOSTIC_HEADERS = [
    "Method", "Initialised from", "Init (MB)", "Acc. round 0 (%)", "Server view (%)",
    "Acc. last 10 (%)", "Server view (%)",
]
#: what the two accuracy views mean (printed under the tables)
VIEWS_NOTE = (
    "Accuracy: every client of the phase scored with its own model (personalised view); "
    "server view: the server's cluster model, with the client's own values only for the "
    "layers the method keeps local by design (FedBN's normalisation layers, ParFed's and "
    "FedFina's unshared layers, Local: everything)."
)


# --------------------------------------------------------------------------- statistics


def is_missing(value: Any) -> bool:
    """``True`` for ``None`` and for a NaN (Python or NumPy float)."""
    if value is None:
        return True
    if isinstance(value, numbers.Integral) or not isinstance(value, numbers.Real):
        return False
    return math.isnan(float(value))


def _present(values: Sequence[Any]) -> list[float | int]:
    return [v for v in values if not is_missing(v)]


def seed_mean(values: Sequence[Any]) -> float | int:
    """Mean over seeds ignoring NaN/None (NaN if all missing).

    An ``int`` (exact) when every present value is the same int, e.g. FedAvg's upload bytes.
    """
    present = _present(values)
    if not present:
        return math.nan
    first = present[0]
    if all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v == first
        for v in present
    ):
        return int(first)
    return math.fsum(float(v) for v in present) / len(present)


def seed_std(values: Sequence[Any]) -> float:
    """Population std (ddof=0) over seeds ignoring NaN/None (0.0 for one value, NaN if none)."""
    present = [float(v) for v in _present(values)]
    if not present:
        return math.nan
    mean = math.fsum(present) / len(present)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in present) / len(present))


def _label(seeds: list[dict[str, Any]], key: str) -> str:
    """The seeds' common text label; distinct labels are joined with `` / ``."""
    labels: list[str] = []
    for res in seeds:
        text = str(res.get(key, ""))
        if text not in labels:
            labels.append(text)
    return " / ".join(labels)


def summarise_method(method: str, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``compare.csv`` row: means and population stds over ``seeds`` (units as the keys)."""
    row: dict[str, Any] = {
        "method": method,
        "exchanges": _label(seeds, "exchanges"),
        "initialises": _label(seeds, "initialises"),
        "repeats": len(seeds),
    }
    for key, with_std in _NUMERIC:
        values = [res.get(key) for res in seeds]
        row[key] = seed_mean(values)
        if with_std:
            row[f"{key}_std"] = seed_std(values)
    return {col: row[col] for col in COMPARE_COLUMNS}


def summarise(runs: Runs) -> list[dict[str, Any]]:
    """One row per method, in the order of ``runs``, with the keys of :data:`COMPARE_COLUMNS`."""
    return [summarise_method(method, seeds) for method, seeds in runs.items()]


# --------------------------------------------------------------------------- CSV


def _csv_cell(value: Any) -> Any:
    return "" if is_missing(value) else value


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path | str) -> Path:
    """Write ``columns`` of ``rows`` as CSV; missing values (NaN, None) become empty cells."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({col: _csv_cell(row.get(col)) for col in columns})
    return path


def write_compare_csv(rows: list[dict[str, Any]], path: Path | str) -> Path:
    """Write ``compare.csv``: one row per method; fractions, bytes, seconds; NaN -> empty."""
    return write_csv(rows, COMPARE_COLUMNS, path)


# --------------------------------------------------------------------------- table cells


def format_stat(
    mean: Any, std: Any, repeats: int, scale: float = 1.0, decimals: int = 2
) -> str:
    """``mean ± std`` (or just ``mean`` for one repeat) of ``value * scale``; ``n/a`` if missing."""
    if is_missing(mean):
        return "n/a"
    text = f"{float(mean) * scale:.{decimals}f}"
    if repeats > 1:
        spread = "n/a" if is_missing(std) else f"{float(std) * scale:.{decimals}f}"
        text += f" ± {spread}"
    return text


def _cell(row: dict[str, Any], key: str, scale: float, decimals: int = 4) -> str:
    return format_stat(row.get(key), row.get(f"{key}_std"), row["repeats"], scale, decimals)


def known_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the known-phase table: upload in GB (2^30 B), accuracy in %."""
    cells = [
        [
            str(row["method"]),
            str(row["exchanges"]),
            _cell(row, "upload_bytes", 1 / GIB, 4),
            _cell(row, "known_accuracy", 100.0, 2),
            _cell(row, "known_accuracy_server", 100.0, 2),
        ]
        for row in rows
    ]
    return list(KNOWN_HEADERS), cells


def agnostic_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the agnostic-phase table: init download in MB (2^20 B), acc. in %."""
    cells = [
        [
            str(row["method"]),
            str(row["initialises"]),
            _cell(row, "init_bytes", 1 / MIB, 4),
            _cell(row, "agnostic_accuracy_round0", 100.0, 2),
            _cell(row, "agnostic_accuracy_round0_server", 100.0, 2),
            _cell(row, "agnostic_accuracy_last10", 100.0, 2),
            _cell(row, "agnostic_accuracy_last10_server", 100.0, 2),
        ]
        for row in rows
    ]
    return list(AGNOSTIC_HEADERS), cells


def footnote(rows: list[dict[str, Any]]) -> str:
    """One line with the unit definitions and how many seeds each cell averages."""
    repeats = {int(row["repeats"]) for row in rows}
    if len(repeats) == 1:
        n = repeats.pop()
        seeds = f"mean ± population std over {n} seeds" if n > 1 else "a single seed"
    else:
        seeds = "mean ± population std over seeds (" + ", ".join(
            f"{row['method']}: {row['repeats']}" for row in rows
        ) + ")"
    return (
        f"GB = 2^30 bytes, MB = 2^20 bytes (float32 wire bytes); accuracies in %; {seeds}; "
        f"n/a = not measured. {VIEWS_NOTE}"
    )


# --------------------------------------------------------------------------- rendering


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A GitHub pipe table (no trailing newline)."""
    lines = [
        "| " + " | ".join(_md_escape(h) for h in headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def text_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Columns aligned for a terminal: text left-aligned, numbers right-aligned."""
    widths = [
        max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)
    ]
    numeric = [
        i > 0 and bool(cells) and all(_looks_numeric(row[i]) for row in cells)
        for i in range(len(headers))
    ]

    def fmt(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)
        ]
        return " | ".join(parts).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule] + [fmt(row) for row in cells])


def _looks_numeric(text: str) -> bool:
    head = text.split(" ± ")[0]
    if head == "n/a":
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


def _known_section(rows: list[dict[str, Any]], render: Any, heading: str = "") -> str:
    table = render(*known_table(rows))
    return f"{heading}{KNOWN_TITLE}\n\n{table}\n\n{footnote(rows)}\n"


def _agnostic_section(rows: list[dict[str, Any]], render: Any, heading: str = "") -> str:
    table = render(*agnostic_table(rows))
    return f"{heading}{AGNOSTIC_TITLE}\n\n{table}\n\n{footnote(rows)}\n"


def write_tables(rows: list[dict[str, Any]], out_dir: Path | str) -> list[Path]:
    """Write ``known_table.md`` and ``agnostic_table.md`` under ``out_dir``; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    known = out_dir / "known_table.md"
    agnostic = out_dir / "agnostic_table.md"
    known.write_text(_known_section(rows, markdown_table, "## "), encoding="utf-8")
    agnostic.write_text(_agnostic_section(rows, markdown_table, "## "), encoding="utf-8")
    return [known, agnostic]


def format_tables(rows: list[dict[str, Any]]) -> str:
    """Both tables as aligned text with titles and the unit footnote, for the terminal."""
    return _known_section(rows, text_table) + "\n" + _agnostic_section(rows, text_table)
