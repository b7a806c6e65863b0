"""``genefl compare``: several methods, several seeds, one protocol, side by side.

Every run uses the same data, partition, clustering, initial weights and client sampling
for a given seed (they come from the run seed's named streams, never from the method), so
the methods differ only in what they exchange. Each run writes its usual files under
``<output_dir>/<method>/seed<seed>/``; a finished run whose recorded configuration matches
is reused, so an interrupted comparison resumes where it stopped. The comparison then
writes ``compare.csv``, the two Markdown tables and the three plots in ``<output_dir>``.
Without an output directory nothing is written and nothing is reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from genefl.algorithms.registry import algorithm_names
from genefl.callbacks import Callback
from genefl.callbacks.progress import say
from genefl.config import RunConfig, resolve, resolved_dict
from genefl.data.datasets import ImageDataset
from genefl.engine.checkpoint import CHECKPOINT_FILE
from genefl.engine.server import config_differences
from genefl.errors import ConfigError
from genefl.record import run_recorded
from genefl.report.compare import Runs, summarise, write_compare_csv, write_tables
from genefl.report.plots import write_plots

COMPARE_FILES = (
    "compare.csv", "known_table.md", "agnostic_table.md", "known_accuracy.png",
    "cumulative_upload.png", "agnostic_accuracy.png",
)


def parse_methods(spec: str | Sequence[str]) -> list[str]:
    """``all`` or a comma-separated list of registered names -> names, without repeats."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    known = algorithm_names()
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"--methods must be 'all' or a comma-separated list of {', '.join(known)}; "
            f"got {','.join(names) or 'nothing'!r}"
        )
    return list(dict.fromkeys(names))


def plan_runs(
    values: Mapping[str, Any],
    methods: Sequence[str],
    repeats: int,
    out: Path | None,
    source: str,
) -> list[tuple[RunConfig, Any]]:
    """Resolve and validate every run's configuration (before any work starts); each run's
    folder is ``out/<method>/seed<seed>`` (none without ``out``).
    """
    base, _ = resolve({k: v for k, v in values.items() if k != "method"}, {}, source)
    runs = []
    for method in methods:
        for r in range(repeats):
            seed = base.seed + r
            folder = None if out is None else str(out / method / f"seed{seed}")
            overrides = {"method": method, "seed": seed, "output_dir": folder}
            runs.append(resolve(values, overrides, source))
    check_methods_fit_model(runs)
    return runs


def check_methods_fit_model(runs: Sequence[tuple[RunConfig, Any]]) -> None:
    """Build each method's algorithm on the run's model (CPU, no data) so that an option
    the model cannot honour (e.g. ``--partial-convs`` above its convolutions) is reported
    before any run starts, not when that method's turn comes.
    """
    import torch

    from genefl.data.datasets import dataset_shape
    from genefl.engine.simulation import make_algorithm, model_parts

    layers_of: dict[tuple[str, str], Any] = {}
    for config, params in runs:
        key = (config.model, config.dataset)
        if key not in layers_of:
            shape, classes = dataset_shape(config.dataset, config.data_dir, config.image_size)
            layers_of[key] = model_parts(config, shape, classes, torch.device("cpu"))[1]
        make_algorithm(config, params, layers_of[key])


def _finished(run_dir: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The stored results of a finished run with the same configuration, else ``None``."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if config_differences(stored.get("run", {}).get("config") or {}, resolved):
        raise ConfigError(
            f"{run_dir} holds results of a different configuration; choose another "
            "--output-dir or pass --overwrite to rerun it"
        )
    return stored


def run_or_reuse(
    config: RunConfig,
    params: Any,
    dataset: ImageDataset | dict[tuple, ImageDataset] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = say,
    label: str = "",
    extra_callbacks: Sequence[Callback] = (),
) -> tuple[dict[str, Any], bool]:
    """One run in ``config.output_dir``: the stored results of a finished run with the
    same configuration (unless ``overwrite``), else run it (with ``extra_callbacks`` too),
    resuming from its checkpoint when there is one. Without an output directory it just
    runs, writing nothing. Returns ``(results, reused)``.

    ``dataset`` is the loaded data set, or a dict caching data sets by ``(dataset,
    data_dir, image_size, cache_dir)`` (filled as runs load them), or ``None``.
    """
    from genefl.data.datasets import load_dataset

    run_dir = Path(config.output_dir) if config.output_dir else None
    results = None
    if run_dir is not None and not overwrite:
        results = _finished(run_dir, resolved_dict(config, params))
    if results is not None:
        log(f"{label}: reusing finished run in {run_dir}")
        return results, True
    if isinstance(dataset, dict):
        key = (config.dataset, config.data_dir, config.image_size, config.cache_dir)
        if key not in dataset:
            dataset[key] = load_dataset(*key)
        dataset = dataset[key]
    resume = run_dir is not None and not overwrite and (run_dir / CHECKPOINT_FILE).exists()
    if resume:
        log(f"{label}: resuming from {run_dir / CHECKPOINT_FILE}")
    results = run_recorded(
        config, params, dataset, run_dir, resume=resume, quiet=quiet,
        desc=f"{config.method} s{config.seed}", callbacks=extra_callbacks,
    )
    return results, False


def run_comparison(
    plan: Sequence[tuple[RunConfig, Any]],
    out: Path | None,
    dataset: ImageDataset,
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] = say,
    callbacks_for: Callable[[RunConfig], Sequence[Callback]] = lambda config: (),
) -> tuple[Runs, list[dict[str, Any]]]:
    """Run (or reuse) every planned run, then write the tables, CSV and plots into ``out``
    (nothing is written or reused without it).

    ``callbacks_for(config)`` gives extra callbacks of each run that is trained (not of a
    reused one), e.g. TensorBoard logging.

    Returns ``(runs, rows)``: method -> per-seed results, and one summary row per method.
    """
    runs: Runs = {}
    for i, (config, params) in enumerate(plan, 1):
        label = f"[{i}/{len(plan)}] {config.method} seed {config.seed}"
        t0 = time.perf_counter()
        results, reused = run_or_reuse(
            config, params, dataset, overwrite, quiet, log, label, callbacks_for(config)
        )
        if not reused:
            log(f"{label}: {brief(results)} ({time.perf_counter() - t0:.0f} s)")
        runs.setdefault(config.method, []).append(results)
    rows = summarise(runs)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_compare_csv(rows, out / "compare.csv")
        write_tables(rows, out)
        write_plots(runs, out)
    return runs, rows


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f} %"


def brief(results: Mapping[str, Any]) -> str:
    """One line of a run's headline figures (personalised view; server view in brackets)."""
    def both(key: str) -> str:
        return f"{_pct(results.get(key))} (server {_pct(results.get(key + '_server'))})"

    return (
        f"known {both('known_accuracy')}, upload {results['upload_bytes'] / 2**30:.4f} GB, "
        f"new clients round 0 {both('agnostic_accuracy_round0')}, last 10 "
        f"{both('agnostic_accuracy_last10')}"
    )
