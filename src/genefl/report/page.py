"""``genefl report DIR``: one self-contained HTML page of a run, compare, sweep or attack
directory.

The page is generic: every Markdown pipe table and every CSV file of the directory becomes
an HTML table, every PNG is embedded (base64), every TOML file is shown as the resolved
configuration. A run directory (its own or those under a comparison or sweep) adds its
results and the per-round figures drawn from ``results.json`` and ``rounds.csv`` (a
figure the directory already holds as a PNG of the same name is not drawn again). The
machine is the one the runs recorded in ``results.json`` (``run.machine``), else the
machine making the report, said so.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from genefl.errors import GeneflError
from genefl.report import html
from genefl.report.plots import (
    AGNOSTIC_ACCURACY_FILE,
    CUMULATIVE_UPLOAD_FILE,
    KNOWN_ACCURACY_FILE,
    Drawn,
    Runs,
    agnostic_accuracy_figure,
    cumulative_upload_figure,
    figure_png,
    known_accuracy_figure,
)

REPORT_FILE = "report.html"
KINDS = ("sweep", "compare", "attack", "run")
#: files shown first, in this order (the rest follow by name)
FIRST_FILES = (
    "summary.md", "summary.csv", "known_table.md", "agnostic_table.md", "compare.csv",
    "attack.md", "attack.csv", "runs.csv", "rounds.csv",
)
#: JSON files longer than this are cut in the page
MAX_JSON_CHARS = 100_000
#: lists of results.json longer than this are summarised in tables
MAX_LIST_ITEMS = 10

#: the two views of a scoring of every client: ``<phase>_eval_accuracy<suffix>``
EVAL_SUFFIXES = ("", "_server")
#: figures drawn from runs (as ``genefl compare`` draws them: the scorings of every client
#: in both views when recorded, else the participants): file name, results keys any of
#: which must hold data, builder
FIGURES: tuple[tuple[str, tuple[str, ...], Callable[[Runs], Drawn]], ...] = (
    (KNOWN_ACCURACY_FILE, ("known_round_accuracy", "known_eval_rounds"),
     known_accuracy_figure),
    (CUMULATIVE_UPLOAD_FILE, ("known_round_upload_bytes",), cumulative_upload_figure),
    (AGNOSTIC_ACCURACY_FILE, ("agnostic_round_accuracy", "agnostic_eval_rounds"),
     agnostic_accuracy_figure),
)


class ReportError(GeneflError):
    """A directory genefl cannot report on."""


# --------------------------------------------------------------------------- kinds


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()}


def is_run_dir(folder: Path) -> bool:
    """A run's output directory (finished: ``results.json``; or started: ``config.toml``
    and ``rounds.csv``).
    """
    names = _names(folder)
    return "results.json" in names or {"config.toml", "rounds.csv"} <= names


def detect_kind(folder: Path | str) -> str:
    """``sweep``, ``compare``, ``attack`` or ``run``, from the files in ``folder``."""
    folder = Path(folder)
    fix = "give the --output-dir of a `genefl run`, `compare`, `sweep` or `attack`"
    try:
        names = _names(folder)
    except NotADirectoryError:
        raise ReportError(f"report: {folder} is not a directory; {fix}") from None
    except FileNotFoundError:
        raise ReportError(f"report: {folder} does not exist; {fix}") from None
    except OSError as exc:
        raise ReportError(f"report: cannot read {folder} ({exc.strerror}); {fix}") from None
    if "sweep.toml" in names or {"runs.csv", "summary.csv"} <= names:
        return "sweep"
    if "compare.csv" in names:
        return "compare"
    if {"attack.csv", "attack.json"} & names:
        return "attack"
    if is_run_dir(folder):
        return "run"
    raise ReportError(
        f"report: {folder} holds no results.json, compare.csv, sweep.toml or attack.csv, so "
        f"it is not a run, compare, sweep or attack directory; {fix}"
    )


# --------------------------------------------------------------------------- runs


def _read_json(path: Path) -> Any:
    """The parsed file, or ``None`` if missing or not JSON (an interrupted run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def round_series(rows: Sequence[dict[str, str]]) -> dict[str, list[Any]]:
    """The per-round lists of ``results.json`` rebuilt from ``rounds.csv`` rows (for a run
    that has not finished): accuracy and upload per known round, accuracy per agnostic
    round, and, where the rows have them, the phase rounds (from 0) and accuracies (both
    views) of the scorings of every client.
    """
    series: dict[str, list[Any]] = {}
    for phase in ("known", "agnostic"):
        mine = [r for r in rows if r.get("phase") == phase]
        series[f"{phase}_round_accuracy"] = [_float(r.get("accuracy")) for r in mine]
        if phase == "known":
            series["known_round_upload_bytes"] = [_float(r.get("upload_bytes")) for r in mine]
        evaluated = [r for r in mine if _float(r.get("eval_accuracy")) is not None
                     or _float(r.get("eval_accuracy_server")) is not None]
        if evaluated:
            series[f"{phase}_eval_rounds"] = [int(r.get("phase_round") or 0) for r in evaluated]
            for suffix in EVAL_SUFFIXES:
                series[f"{phase}_eval_accuracy{suffix}"] = [
                    _float(r.get(f"eval_accuracy{suffix}")) for r in evaluated
                ]
    return series


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file (empty if it is missing or unreadable)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def load_run(folder: Path) -> dict[str, Any]:
    """A run's ``results.json`` over the lists rebuilt from its ``rounds.csv``."""
    results = _read_json(folder / "results.json")
    merged: dict[str, Any] = dict(results) if isinstance(results, dict) else {}
    for key, values in round_series(read_csv(folder / "rounds.csv")).items():
        merged.setdefault(key, values)
    if "method" not in merged:
        config = _config_value(folder / "config.toml", "method")
        merged["method"] = config if config is not None else folder.name
    return merged


def _config_value(path: Path, key: str) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(rf'^{key}\s*=\s*"([^"]*)"', text, re.MULTILINE)
    return match.group(1) if match else None


def _natural(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_runs(folder: Path, depth: int = 3) -> list[Path]:
    """Run directories below ``folder`` (not itself), at most ``depth`` levels down, in
    natural order (``seed2`` before ``seed10``).
    """
    found: list[Path] = []
    level = [folder]
    for _ in range(depth):
        level = sorted((d for p in level for d in p.iterdir() if d.is_dir()), key=_natural)
        found += [d for d in level if is_run_dir(d)]
    return sorted(found, key=_natural)


Loaded = Sequence[tuple[Path, dict[str, Any]]]


def group_runs(folder: Path, loaded: Loaded) -> Runs:
    """Loaded runs grouped by their parent folder (method or sweep cell), labelled by its
    name (a run directly in ``folder`` by its own).
    """
    grouped: Runs = {}
    for run, results in loaded:
        parent = run.parent.relative_to(folder)
        label = parent.name if parent.parts else run.name
        grouped.setdefault(label, []).append(results)
    return grouped


# --------------------------------------------------------------------------- sections


def brief(value: Any) -> str:
    """A results value for a table cell: scalars as they are, long lists summarised,
    dicts as compact JSON.
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else repr(value)
    if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
        return f"[{brief(value[0])}, ..., {brief(value[-1])}] ({len(value)} values)"
    if isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(", ", ": "))
        return text if len(text) <= 400 else text[:400] + " ..."
    return str(value)


def results_section(results: dict[str, Any]) -> str:
    """The run's ``results.json`` (but its ``run`` info) as a name/value table."""
    items = [(k, brief(v)) for k, v in results.items() if k != "run"]
    return html.section("Results", html.key_value_table(items)) if items else ""


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def runs_section(folder: Path, loaded: Loaded) -> str:
    """One row per run directory below ``folder``: its path and every scalar result."""
    if not loaded:
        return ""
    columns = list(dict.fromkeys(
        k for _, res in loaded for k, v in res.items() if _is_scalar(v)
    ))
    rows = [
        [str(run.relative_to(folder))] + [brief(res[c]) if c in res else "" for c in columns]
        for run, res in loaded
    ]
    note = html.paragraph(f"{len(loaded)} run director{'y' if len(loaded) == 1 else 'ies'}; "
                          "accuracies are fractions, bytes are float32 wire bytes.")
    return html.section("Runs", note + html.table(["run", *columns], rows))


def _ordered(files: Iterable[Path]) -> list[Path]:
    def key(p: Path) -> tuple[int, str]:
        return (FIRST_FILES.index(p.name) if p.name in FIRST_FILES else len(FIRST_FILES), p.name)

    return sorted(files, key=key)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def tables_section(files: Sequence[Path]) -> str:
    """Every Markdown file (its tables and text) and every CSV file, as tables."""
    parts = []
    for path in _ordered(f for f in files if f.suffix.lower() in (".md", ".csv")):
        body = html.markdown(_text(path), 4) if path.suffix.lower() == ".md" \
            else html.csv_table(_text(path))
        parts.append(html.section(path.name, body, level=3))
    return html.section("Tables", "".join(parts)) if parts else ""


def drawn_figures(runs: Runs, skip: set[str]) -> list[tuple[str, bytes]]:
    """``(name, PNG bytes)`` of each figure of :data:`FIGURES` that some run has data for
    and whose file name is not in ``skip``.
    """
    out = []
    for name, keys, build in FIGURES:
        if name in skip:
            continue
        if any(res.get(k) for seeds in runs.values() for res in seeds for k in keys):
            out.append((name, figure_png(build(runs))))
    return out


def figures_section(files: Sequence[Path], runs: Runs) -> str:
    """The directory's PNG files, then the figures drawn from its runs."""
    order = [name for name, _, _ in FIGURES]
    pngs = sorted(
        (f for f in files if f.suffix.lower() == ".png"),
        key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name),
    )
    images = [html.png_image(p.read_bytes(), p.name) for p in pngs]
    drawn = drawn_figures(runs, {p.name for p in pngs})
    images += [html.png_image(data, f"{name} (drawn by the report from the runs)")
               for name, data in drawn]
    return html.section("Figures", "".join(images)) if images else ""


def config_section(files: Sequence[Path]) -> str:
    """Every TOML file: the resolved configuration of the run, comparison, sweep or
    attack.
    """
    parts = [html.section(p.name, html.preformatted(_text(p)), level=3)
             for p in sorted(f for f in files if f.suffix.lower() == ".toml")]
    return html.section("Configuration", "".join(parts)) if parts else ""


def json_section(files: Sequence[Path]) -> str:
    """JSON files other than ``results.json`` (e.g. ``attack.json``), folded."""
    parts = []
    for path in sorted(f for f in files if f.suffix.lower() == ".json"):
        if path.name == "results.json":
            continue
        text = _text(path)
        data = _read_json(path)
        if data is not None:
            text = json.dumps(data, indent=1)
        if len(text) > MAX_JSON_CHARS:
            text = text[:MAX_JSON_CHARS] + f"\n... (cut at {MAX_JSON_CHARS} characters)"
        parts.append(html.details(path.name, html.preformatted(text)))
    return html.section("Details", "".join(parts)) if parts else ""


def recorded_machines(results: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """The distinct machines the runs recorded (with the device each used), and how many
    runs each.
    """
    seen: dict[str, tuple[dict[str, Any], int]] = {}
    for res in results:
        machine = (res.get("run") or {}).get("machine")
        if not isinstance(machine, dict):
            continue
        entry = {**machine, "device used": res.get("device", "unknown")}
        key = json.dumps(entry, sort_keys=True, default=str)
        seen[key] = (entry, seen[key][1] + 1 if key in seen else 1)
    return list(seen.values())


def machine_section(results: Sequence[dict[str, Any]]) -> str:
    """The machine(s) the runs recorded, or this machine, labelled as such."""
    from genefl.machine import machine_info

    machines = recorded_machines(results)
    if not machines:
        body = html.key_value_table(
            machine_info().items(),
            "machine of the report (the directory recorded none)",
        )
        return html.section("Machine", body)
    body = "".join(
        html.key_value_table(m.items(), f"recorded by {n} run{'s' if n > 1 else ''}")
        for m, n in machines
    )
    return html.section("Machine", body)


def files_section(files: Sequence[Path], runs: int) -> str:
    """The directory's files with their sizes."""
    rows = [[p.name, p.stat().st_size] for p in sorted(files)]
    note = html.paragraph(f"and {runs} run director{'y' if runs == 1 else 'ies'} below"
                          if runs else "")
    return html.section("Files", html.table(["file", "bytes"], rows) + (note if runs else ""))


# --------------------------------------------------------------------------- page


def header(folder: Path, kind: str) -> str:
    """Title, directory, time, and the genefl version and commit that made the page."""
    from genefl import __version__
    from genefl.machine import git_commit

    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"<h1>genefl {html.esc(kind)} report: {html.esc(folder.resolve().name)}</h1>"
        f'<p class="meta">directory {html.esc(folder.resolve())}; made {html.esc(made)} by '
        f"genefl {html.esc(__version__)} (commit {html.esc(git_commit())})</p>"
    )


def build_report(folder: Path | str, exclude: Sequence[Path] = ()) -> str:
    """The whole HTML page of ``folder`` (files in ``exclude`` are left out)."""
    folder = Path(folder)
    kind = detect_kind(folder)
    skip = {p.resolve() for p in exclude}
    files = [p for p in folder.iterdir() if p.is_file() and p.resolve() not in skip]
    if kind == "run":
        own = load_run(folder)
        below: Loaded = []
        runs = {str(own["method"]): [own]}
    else:
        below = [(run, load_run(run)) for run in find_runs(folder)]
        runs = group_runs(folder, below)
    body = "".join([
        header(folder, kind),
        results_section(own) if kind == "run" else "",
        tables_section(files),
        figures_section(files, runs),
        runs_section(folder, below),
        config_section(files),
        json_section(files),
        machine_section([res for seeds in runs.values() for res in seeds]),
        files_section(files, len(below)),
    ])
    return html.page(f"genefl {kind} report: {folder.resolve().name}", body)


def write_report(folder: Path | str, output: Path | str | None = None) -> Path:
    """Write the page of ``folder`` to ``output`` (default ``folder/report.html``)."""
    folder = Path(folder)
    out = Path(output) if output is not None else folder / REPORT_FILE
    text = build_report(folder, exclude=[out])
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"report: cannot write {out} ({exc.strerror}); choose another "
                          "--output") from exc
    return out
