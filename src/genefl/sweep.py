"""``genefl sweep SWEEP.toml``: a grid over any options, several seeds per cell.

A sweep file names a base protocol and one or more grids; each grid is the cartesian
product of its option lists, and the sweep is the union of its grids (a cell defined
twice, e.g. the default value of two one-at-a-time grids, runs once)::

    name = "table5-ablation-ci"     # optional; default: the file's stem
    repeats = 3                     # seeds seed, seed + 1, ...; default 1
    # output_dir = "runs/my-sweep"  # optional; --output-dir overrides
    [base]                          # options of every cell (any `genefl run` option)
    preset = "ci"
    method = "genefl"
    [[grid]]
    lambda1 = [0.0, 0.1]
    [[grid]]
    layer_score = ["paper", "cosine"]

Every run is a normal run directory, ``<output_dir>/cells/<cell>/seed<seed>/``; a
finished run whose recorded configuration matches is reused, an interrupted one resumes
from its checkpoint, so a sweep can always be rerun (``--overwrite`` redoes everything).
``runs.csv`` has one row per run (every swept option, the seed, every number of
``results.json``), ``summary.csv`` and ``summary.md`` the mean and std per cell.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genefl.callbacks.progress import say
from genefl.config import RunConfig, dump_toml, resolve, resolved_dict
from genefl.errors import ConfigError
from genefl.presets import preset_values
from genefl.report.compare import is_missing, seed_mean, seed_std

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SWEEP_KEYS = ("name", "repeats", "output_dir", "base", "grid")
SWEEP_FILES = ("runs.csv", "summary.csv", "summary.md", "sweep.toml")

#: headline metrics of ``summary.md`` (key, header, scale, decimals); percent for accuracies
SUMMARY_METRICS: list[tuple[str, str, float, int]] = [
    ("known_accuracy", "Known acc. (%)", 100.0, 2),
    ("known_accuracy_server", "Known acc., server (%)", 100.0, 2),
    ("agnostic_accuracy_round0", "New round 0 (%)", 100.0, 2),
    ("agnostic_accuracy_round0_server", "New round 0, server (%)", 100.0, 2),
    ("agnostic_accuracy_last10", "New last 10 (%)", 100.0, 2),
    ("agnostic_accuracy_last10_server", "New last 10, server (%)", 100.0, 2),
    ("upload_bytes", "Upload (GB)", 1 / 2**30, 4),
    ("learngene_bytes", "learnGene (MB)", 1 / 2**20, 4),
    ("wall_seconds", "Time (s)", 1.0, 0),
]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its name, the options it sets, and its resolved runs."""

    name: str
    #: the swept options' values of this cell (every option any grid sweeps)
    swept: dict[str, Any]
    #: one ``(RunConfig, params)`` per seed
    runs: list[tuple[RunConfig, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Sweep:
    """A parsed, validated sweep file."""

    name: str
    path: Path
    repeats: int
    output_dir: Path
    #: every option any grid sweeps, in first-seen order
    swept: list[str]
    cells: list[Cell]

    @property
    def total_runs(self) -> int:
        """Runs in the sweep (cells x repeats)."""
        return sum(len(c.runs) for c in self.cells)


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"sweep file {path}: {message}")


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """The raw TOML of a sweep file (a ConfigError for a missing or invalid file)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise _fail(path, "does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"is not valid TOML ({exc})") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror})") from None


def _options(table: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _fail(path, f"{where} must be a table of options")
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            raise _fail(path, f"{where}: option {key!r} is a table; options are plain values")
        out[key.replace("-", "_")] = value
    return out


def grid_points(grids: Sequence[Mapping[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Every combination of each grid's value lists (a scalar is a list of one), grids
    in order, without exact repeats.
    """
    points: list[dict[str, Any]] = []
    for i, grid in enumerate(grids, 1):
        keys = list(grid)
        lists = []
        for key in keys:
            values = grid[key] if isinstance(grid[key], list) else [grid[key]]
            if not values:
                raise _fail(path, f"[[grid]] number {i}: {key} has an empty list of values")
            lists.append(values)
        for combo in itertools.product(*lists):
            point = dict(zip(keys, combo))
            if point not in points:
                points.append(point)
    return points or [{}]


def cell_name(point: Mapping[str, Any]) -> str:
    """A folder-safe name of a grid point, ``key=value,key=value`` (``base`` if empty)."""
    if not point:
        return "base"
    text = ",".join(f"{k}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)


def _cell_values(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """Preset < base < the point (a ``preset`` in the base or the point applies first)."""
    merged = {**base, **point}
    values = preset_values(merged.pop("preset", None))
    values.pop("repeats", None)
    values.update(merged)
    return values


def parse_sweep(
    path: str | Path, output_dir: str | Path | None = None, overwrite: bool = False,
    repeats_override: int | None = None,
) -> Sweep:
    """Read and validate a sweep file: every cell and seed resolved (and each method built
    on its model) before any work; a ConfigError names the file and the problem.
    ``repeats_override`` replaces the file's ``repeats`` (e.g. a first pass with one seed, which
    a later full pass reuses).
    """
    from genefl.compare import check_methods_fit_model

    path = Path(path)
    raw = read_sweep_file(path)
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; a sweep file has "
                          f"{', '.join(SWEEP_KEYS)} (options go under [base] or [[grid]])")
    name = str(raw.get("name") or path.stem)
    repeats = raw.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise _fail(path, f"repeats must be an integer >= 1; got {repeats!r}")
    if repeats_override is not None:
        repeats = repeats_override
    base = _options(raw.get("base", {}), path, "[base]")
    for key in ("seed", "output_dir", "repeats"):
        if key in base:
            raise _fail(path, f"[base] sets {key}; the sweep sets it (use repeats = N at the "
                              "top and --output-dir)")
    grids_raw = raw.get("grid", [])
    if isinstance(grids_raw, dict):
        grids_raw = [grids_raw]
    if not isinstance(grids_raw, list):
        raise _fail(path, "grid must be one or more [[grid]] tables")
    grids = [_options(g, path, f"[[grid]] number {i}") for i, g in enumerate(grids_raw, 1)]
    for i, grid in enumerate(grids, 1):
        for key in ("seed", "output_dir", "repeats"):
            if key in grid:
                raise _fail(path, f"[[grid]] number {i} sweeps {key}; seeds come from "
                                  "repeats, and every cell has its own folder")
    swept = list(dict.fromkeys(k for g in grids for k in g))
    out = Path(output_dir or raw.get("output_dir") or Path("runs") / f"sweep-{name}")

    cells: list[Cell] = []
    seen: dict[str, str] = {}  # resolved configuration -> cell name
    source = str(path)
    for point in grid_points(grids, path):
        try:
            values = _cell_values(base, point)
            config, params = resolve(values, {}, source)
        except ConfigError as exc:
            raise _fail(path, f"cell {cell_name(point)}: {exc}") from None
        key = dump_toml({k: v for k, v in resolved_dict(config, params).items()
                         if k != "output_dir"})
        if key in seen:
            continue  # the same run as an earlier cell
        name_ = cell_name(point)
        seen[key] = name_
        full = resolved_dict(config, params)
        cell = Cell(name_, {k: full.get(k, values.get(k)) for k in swept})
        for r in range(repeats):
            seed = config.seed + r
            run_dir = out / "cells" / name_ / f"seed{seed}"
            cell.runs.append(resolve(values, {"seed": seed, "output_dir": str(run_dir)},
                                     source))
        cells.append(cell)
    try:
        check_methods_fit_model([run for cell in cells for run in cell.runs[:1]])
    except ConfigError as exc:
        raise _fail(path, str(exc)) from None
    return Sweep(name, path, repeats, out, swept, cells)


# ----------------------------------------------------------------------------- running


def _run_job(config: RunConfig, params: Any, overwrite: bool, threads: int) -> dict[str, Any]:
    """One run in a worker process (``threads`` intra-op threads)."""
    import torch

    from genefl.compare import run_or_reuse
    from genefl.engine.workers import CORES_ENV

    torch.set_num_threads(threads)
    os.environ[CORES_ENV] = str(threads)  # --workers auto counts this job's share only
    results, _ = run_or_reuse(config, params, None, overwrite=overwrite, quiet=True,
                              log=lambda _: None)
    return results


def run_sweep(
    sweep: Sweep, overwrite: bool = False, quiet: bool = False, jobs: int = 1,
    log: Callable[[str], None] = say,
) -> list[dict[str, Any]]:
    """Run (or reuse) every run of the sweep, then write ``runs.csv``, ``summary.csv``,
    ``summary.md`` and a copy of the sweep file; returns the rows of ``runs.csv``.

    ``jobs`` > 1 runs that many runs at once in worker processes, each with
    ``cores // jobs`` threads (a run's numbers can differ in the last float bits from a
    run with another thread count).
    """
    from genefl.compare import brief, run_or_reuse

    out = sweep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.toml").write_text(sweep.path.read_text())
    flat = [(cell, config, params) for cell in sweep.cells for config, params in cell.runs]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    total = len(flat)
    t_start = time.perf_counter()

    def label(i: int, cell: Cell, config: RunConfig) -> str:
        return f"[{i}/{total}] {cell.name} seed {config.seed}"

    if jobs <= 1:
        datasets: dict[tuple, Any] = {}
        for i, (cell, config, params) in enumerate(flat, 1):
            t0 = time.perf_counter()
            res, reused = run_or_reuse(config, params, datasets, overwrite=overwrite,
                                       quiet=quiet, log=lambda _: None)
            results[(cell.name, config.seed)] = res
            how = "reused" if reused else f"{time.perf_counter() - t0:.0f} s"
            log(f"{label(i, cell, config)}: {brief(res)} ({how})")
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        done_count = 0
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            pending: dict[Future, tuple[Cell, RunConfig, float]] = {}
            queue = list(flat)
            try:
                while queue or pending:
                    while queue and len(pending) < jobs:
                        cell, config, params = queue.pop(0)
                        future = pool.submit(_run_job, config, params, overwrite, threads)
                        pending[future] = (cell, config, time.perf_counter())
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        cell, config, t0 = pending.pop(future)
                        res = future.result()
                        done_count += 1
                        results[(cell.name, config.seed)] = res
                        log(f"{label(done_count, cell, config)}: {brief(res)} "
                            f"({time.perf_counter() - t0:.0f} s)")
            except BaseException:
                # Ctrl-C (or a failed run): stop every worker now rather than wait for the
                # runs in flight; each keeps its last checkpoint, so a rerun resumes it.
                workers = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for process in workers:
                    process.terminate()
                raise
    rows = tidy_rows(sweep, results)
    write_sweep_tables(sweep, rows, out)
    log(f"sweep {sweep.name}: {total} runs in {time.perf_counter() - t_start:.0f} s")
    return rows


# ----------------------------------------------------------------------------- tables


def scalar_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of a results dict (lists, tables, text and the config left out)."""
    return {
        k: v for k, v in results.items()
        if (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None
    }


def tidy_rows(sweep: Sweep, results: Mapping[tuple[str, int], Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
    """One row per run: cell, every swept option, seed, every number of its results."""
    rows = []
    for cell in sweep.cells:
        for config, _ in cell.runs:
            res = results[(cell.name, config.seed)]
            metrics = {k: v for k, v in scalar_metrics(res).items() if k != "seed"}
            rows.append({"cell": cell.name, **cell.swept, "seed": config.seed, **metrics})
    return rows


def summary_rows(sweep: Sweep, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: the swept options, the number of seeds, and ``<metric>`` (mean) and
    ``<metric>_std`` (population std) of every metric.
    """
    fixed = {"cell", "seed", *sweep.swept}
    metrics = list(dict.fromkeys(k for r in rows for k in r if k not in fixed))
    out = []
    for cell in sweep.cells:
        mine = [r for r in rows if r["cell"] == cell.name]
        summary: dict[str, Any] = {"cell": cell.name, **cell.swept, "repeats": len(mine)}
        for key in metrics:
            values = [r.get(key) for r in mine]
            summary[key] = seed_mean(values)
            summary[f"{key}_std"] = seed_std(values)
        out.append(summary)
    return out


def _csv_value(value: Any) -> Any:
    return "" if is_missing(value) else value


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Rows as CSV (columns: the union of the rows' keys in first-seen order)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})


def mean_std_text(mean: Any, std: Any, scale: float, decimals: int) -> str:
    """``mean ± std`` scaled (``n/a`` when missing; no ``±`` for one seed's std 0)."""
    if is_missing(mean):
        return "n/a"
    text = f"{float(mean) * scale:.{decimals}f}"
    if not is_missing(std) and float(std) > 0:
        text += f" ± {float(std) * scale:.{decimals}f}"
    return text


def summary_markdown(sweep: Sweep, summary: Sequence[Mapping[str, Any]]) -> str:
    """The headline metrics per cell as a Markdown table (mean ± std over seeds)."""
    metrics = [m for m in SUMMARY_METRICS if any(m[0] in s for s in summary)]
    headers = ["Cell", *sweep.swept, "Seeds", *(m[1] for m in metrics)]
    lines = [
        f"Sweep {sweep.name} ({sweep.path.name}): mean ± std over seeds",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for s in summary:
        cells = [s["cell"], *(str(s.get(k, "")) for k in sweep.swept), str(s["repeats"])]
        cells += [mean_std_text(s.get(key), s.get(f"{key}_std"), scale, dec)
                  for key, _, scale, dec in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_sweep_tables(sweep: Sweep, rows: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``runs.csv``, ``summary.csv`` and ``summary.md`` in ``out``."""
    summary = summary_rows(sweep, rows)
    write_csv(rows, out / "runs.csv")
    write_csv(summary, out / "summary.csv")
    (out / "summary.md").write_text(summary_markdown(sweep, summary))


def format_plan(sweep: Sweep) -> str:
    """One line saying what the sweep will do."""
    return (f"sweep {sweep.name}: {len(sweep.cells)} cell(s) x {sweep.repeats} seed(s) = "
            f"{sweep.total_runs} runs -> {sweep.output_dir}/")


__all__ = [
    "Cell", "Sweep", "parse_sweep", "run_sweep", "tidy_rows", "summary_rows",
    "summary_markdown", "grid_points", "cell_name", "format_plan",
]
