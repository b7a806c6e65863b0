"""The Python API: :func:`run` and :func:`compare`, the functions behind ``genefl run`` and
``genefl compare`` (the CLI only adds a default output folder and prints).

Options are the CLI's, with underscores (``known_rounds=2``, ``lambda1=0.3``), given as
keyword arguments and/or as ``config``: a TOML file, a mapping or a :class:`RunConfig`.
Precedence: defaults < ``preset`` < ``config`` < keyword arguments. Every value is checked
before any work starts; a bad one raises :class:`~genefl.errors.ConfigError` with the
CLI's message. Files are written only when ``output_dir`` is given::

    import genefl

    result = genefl.run(method="fedavg", known_rounds=2, output_dir="runs/a")
    result["known_accuracy"], result.output_dir
    table = genefl.compare(methods="genefl,fedavg", repeats=2, known_rounds=2)
    table.rows, table.runs["fedavg"][1].results

See ``docs/api.md`` for what is stable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genefl.callbacks.tensorboard import require_tensorboard, tensorboard_loggers
from genefl.config import RunConfig, dump_toml, load_toml, resolve, resolved_dict
from genefl.errors import ConfigError
from genefl.options import as_dict

if TYPE_CHECKING:
    from genefl.callbacks import Callback
    from genefl.data.datasets import ImageDataset
    from genefl.privacy.study import AttackStudy

#: what ``config`` may be: a TOML file, a mapping of option values, a RunConfig, or nothing
ConfigLike = RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None
#: receives one progress line at a time (``print`` by default)
Log = Callable[[str], None]

#: settings of compare() that presets and config files may hold besides the run options
COMPARE_SETTINGS = ("methods", "repeats")


@dataclass(frozen=True)
class RunResult:
    """One finished run: ``results`` is what ``results.json`` holds (``result[key]`` reads
    it), ``output_dir`` where its files are (``None``: nothing was written).
    """

    results: dict[str, Any]
    config: RunConfig
    #: the method's options (its frozen params dataclass, e.g. GENE-FL's ``lambda1``)
    params: Any
    output_dir: Path | None

    def __getitem__(self, key: str) -> Any:
        return self.results[key]

    @property
    def notes(self) -> list[str]:
        """What the run adjusted or could not do (also printed by ``genefl run``)."""
        return list(self.results.get("notes", []))

    def summary(self) -> str:
        """The end-of-run table ``genefl run`` prints."""
        from genefl.report.summary import format_summary

        return format_summary(self.results)


@dataclass(frozen=True)
class CompareResult:
    """A finished comparison: ``runs`` maps each method to its runs in seed order, ``rows``
    are ``compare.csv``'s rows (one per method: means and ``_std`` over the seeds).
    """

    runs: dict[str, list[RunResult]]
    rows: list[dict[str, Any]]
    output_dir: Path | None

    @property
    def methods(self) -> list[str]:
        """The methods compared, in table order."""
        return list(self.runs)

    def row(self, method: str) -> dict[str, Any]:
        """The summary row of ``method`` (a KeyError names the methods compared)."""
        for row in self.rows:
            if row["method"] == method:
                return row
        raise KeyError(f"{method!r} was not compared; methods: {', '.join(self.methods)}")

    def tables(self) -> str:
        """The known-phase and agnostic-phase tables ``genefl compare`` prints."""
        from genefl.report.compare import format_tables

        return format_tables(self.rows)


def merge_options(
    config: ConfigLike = None, preset: str | None = None, **options: Any
) -> dict[str, Any]:
    """Flat option values: ``preset`` < ``config`` < ``options`` (not yet validated; paths
    become strings).
    """
    from genefl.presets import preset_values

    values = preset_values(preset)
    if isinstance(config, RunConfig):
        values.update(as_dict(config))
    elif isinstance(config, Mapping):
        values.update({str(k).replace("-", "_"): v for k, v in config.items()})
    elif isinstance(config, (str, os.PathLike)):
        values.update(load_toml(config))
    elif config is not None:
        raise ConfigError(
            "config must be a TOML file path, a mapping of options or a RunConfig; got "
            f"{type(config).__name__}"
        )
    values.update(options)
    return {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}


def _source(config: ConfigLike) -> str:
    """How error messages name where the values came from."""
    return str(config) if isinstance(config, (str, os.PathLike)) else "the arguments"


def _log(log: Log | None, quiet: bool) -> Log:
    return log if log is not None else (lambda line: None) if quiet else print


def _tensorboard_dir(folder: str | os.PathLike[str] | None) -> str | None:
    """``folder`` as a string, after checking that TensorBoard is installed."""
    if folder is None:
        return None
    require_tensorboard()
    return os.fspath(folder)


def _checked_dataset(config: RunConfig) -> ImageDataset:
    """The run's data set, after checking the device, the files and the protocol against
    them (N, M, s), before anything is written.
    """
    from genefl.data.datasets import load_dataset
    from genefl.engine.simulation import resolve_device, validate_protocol

    resolve_device(config.device)
    dataset = load_dataset(config.dataset, config.data_dir, config.image_size, config.cache_dir)
    validate_protocol(config, dataset)
    return dataset


def _resume_values(folder: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The interrupted run's own config.toml, with any options given (which must agree)."""
    config_file = folder / "config.toml"
    if not config_file.exists():
        raise ConfigError(
            f"--resume {folder}: no config.toml there; give the output directory of a run "
            "started with `genefl run`"
        )
    values = load_toml(config_file)
    values.update(options)
    values["output_dir"] = str(folder)
    return values


def _stored_results(folder: Path) -> dict[str, Any]:
    """A finished run's ``results.json`` (without its ``run`` block)."""
    try:
        stored = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume {folder}: results.json cannot be read ({exc}); "
                          "delete it to rerun from the checkpoint") from None
    return {k: v for k, v in stored.items() if k != "run"}


def _run_values(
    config: ConfigLike, preset: str | None, resume: Path | None, options: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The option values of one run and how errors name their source."""
    given = [key for key in COMPARE_SETTINGS if key in options]
    if given:
        raise ConfigError(f"{', '.join(given)}: a setting of compare(), not of run()")
    if resume is None:
        values, source = merge_options(config, preset, **options), _source(config)
    elif config is not None or preset is not None:
        raise ConfigError("--resume takes the configuration from the run's config.toml; "
                          "drop --preset/--config")
    else:
        values, source = _resume_values(resume, options), str(resume / "config.toml")
    for key in COMPARE_SETTINGS:  # presets and files may hold them for compare
        values.pop(key, None)
    return values, source


def _from_checkpoint(out: Path | None, resuming: bool, overwrite: bool, say: Log) -> bool:
    """Check (and create) a run's output folder; whether to resume from its checkpoint."""
    from genefl.engine.checkpoint import CHECKPOINT_FILE
    from genefl.record import make_dir

    if out is None:
        return False
    if resuming:
        if (out / CHECKPOINT_FILE).exists():
            return True
        say(f"note: {out} has no {CHECKPOINT_FILE} yet (killed before its first "
            "checkpoint); starting the run from the beginning")
        return False
    if (out / "results.json").exists() and not overwrite:
        raise ConfigError(
            f"--output-dir {out} already holds results.json; choose another directory or "
            "pass --overwrite"
        )
    make_dir(out)
    return False


def run(
    config: ConfigLike = None,
    *,
    preset: str | None = None,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    log: Log | None = None,
    callbacks: Sequence[Callback] = (),
    tensorboard: str | os.PathLike[str] | None = None,
    **options: Any,
) -> RunResult:
    """Run one method (``genefl run``) and return its results.

    ``resume``: the output folder of an interrupted run; it continues from its last
    checkpoint with the configuration in its ``config.toml`` (``options`` may repeat it,
    ``config`` and ``preset`` may not be given); a finished run is not rerun, its stored
    results are returned. ``overwrite``: allow an ``output_dir`` that already holds
    results. ``quiet``: no progress bar and no messages (``log`` receives the messages;
    default ``print``). ``callbacks``: extra :class:`~genefl.callbacks.Callback` objects
    that see every round. ``tensorboard``: also log every round for TensorBoard there
    (``--tensorboard``; needs the ``tensorboard`` package).
    """
    from genefl.record import run_recorded

    tensorboard_dir = _tensorboard_dir(tensorboard)
    say = _log(log, quiet)
    folder = None if resume is None else Path(resume)
    values, source = _run_values(config, preset, folder, options)
    run_config, params = resolve(values, {}, source=source)
    if folder is not None and (folder / "results.json").exists():
        say(f"{folder} already finished; nothing to resume")
        return RunResult(_stored_results(folder), run_config, params, folder)
    dataset = _checked_dataset(run_config)  # missing/corrupt files fail here
    out = Path(run_config.output_dir) if run_config.output_dir else None
    results = run_recorded(
        run_config, params, dataset, out, quiet=quiet,
        callbacks=[*callbacks, *tensorboard_loggers(tensorboard_dir)],
        resume=_from_checkpoint(out, folder is not None, overwrite, say),
    )
    return RunResult(results, run_config, params, out)


def _repeats(value: Any, source: str) -> int:
    try:
        repeats = int(value)
        if isinstance(value, (bool, float)) or repeats < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"--repeats must be an integer >= 1; got {value!r} ({source})") from None
    return repeats


def compare(
    config: ConfigLike = None,
    *,
    methods: str | Sequence[str] | None = None,
    repeats: int | None = None,
    preset: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    log: Log | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
    **options: Any,
) -> CompareResult:
    """Run several methods under one protocol (``genefl compare``) and return every run
    and the summary rows.

    ``methods``: ``"all"``, a comma-separated string or a list of registered names
    (default: ``config``'s or the preset's, else all); ``repeats``: seeds per method
    (seed, seed+1, ...; default: ``config``'s or the preset's, else 1). With an
    ``output_dir``, every run writes its files into ``output_dir/<method>/seed<s>/``, a
    finished run of the same configuration found there is reused (``overwrite`` reruns
    it), and the tables, ``compare.csv`` and plots are written. ``quiet``, ``log`` as in
    :func:`run`; ``tensorboard`` too, with one folder per method and seed
    (``<tensorboard>/<method>/seed<s>``) for the runs trained (not for those reused).
    """
    from genefl.compare import parse_methods, plan_runs, run_comparison
    from genefl.record import make_dir

    tensorboard_dir = _tensorboard_dir(tensorboard)
    say = _log(log, quiet)
    values = merge_options(config, preset, **options)
    source = _source(config)
    file_methods, file_repeats = values.pop("methods", "all"), values.pop("repeats", 1)
    names = parse_methods(methods if methods is not None else file_methods)
    count = _repeats(repeats if repeats is not None else file_repeats, source)
    folder = values.pop("output_dir", None)
    out = Path(folder) if folder else None
    plan = plan_runs(values, names, count, out, source)
    first = plan[0][0]
    dataset = _checked_dataset(first)  # missing/corrupt files fail here
    if out is not None:
        if (out / "compare.csv").exists() and not overwrite:
            say(f"note: {out}/compare.csv exists; finished runs with the same configuration "
                "are reused and the tables rewritten (--overwrite reruns everything)")
        _write_compare_config(make_dir(out), preset, names, count, plan[0])
    say(f"comparing {', '.join(names)} on {first.dataset} ({count} seed(s) each)"
        + (f" -> {out}/" if out is not None else ""))
    runs, rows = run_comparison(
        plan, out, dataset, overwrite=overwrite, quiet=quiet, log=say,
        callbacks_for=lambda c: tensorboard_loggers(tensorboard_dir, c.method, f"seed{c.seed}"),
    )
    by_method: dict[str, list[RunResult]] = {}
    for (run_config, params), results in zip(plan, (r for m in runs.values() for r in m)):
        run_out = Path(run_config.output_dir) if run_config.output_dir else None
        fresh = {k: v for k, v in results.items() if k != "run"}  # a reused run has it
        by_method.setdefault(run_config.method, []).append(
            RunResult(fresh, run_config, params, run_out)
        )
    return CompareResult(by_method, rows, out)


def _write_compare_config(
    out: Path, preset: str | None, methods: Sequence[str], repeats: int,
    first: tuple[RunConfig, Any],
) -> None:
    """``compare_config.toml``: the comparison's settings and its first run's options."""
    (out / "compare_config.toml").write_text(
        "# resolved configuration of this comparison (seed = first seed)\n"
        + dump_toml({
            "preset": preset, "methods": ",".join(methods), "repeats": repeats,
            **{k: v for k, v in resolved_dict(*first).items()
               if k not in ("method", "output_dir")},
        })
    )


# -- attack ------------------------------------------------------------------------------


def attack(
    config: ConfigLike = None,
    *,
    preset: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    quiet: bool = True,
    log: Log | None = None,
    **options: Any,
) -> AttackStudy:
    """Gradient-inversion attacks against each method (``genefl attack``): every method of
    ``methods`` is trained once and its victims attacked at each of ``attack_rounds`` with
    each attack of ``attack`` (``idlg``, ``ig``, ``both``); returns the study (its
    ``rows`` are the table's, ``attacks`` the per method/round/attack results).

    ``options`` are the attack's options (``methods``, ``attack``, ``attack_rounds``,
    ``images``, ``ig_tv``, ... as ``genefl attack --help`` lists them) and any ``genefl
    run`` option of the protocol (``dataset``, ``known_rounds``, ...); precedence and
    ``config`` as in :func:`run`. Files (table, CSV, JSON, grid) only with ``output_dir``.
    """
    from genefl.options import build, option_fields
    from genefl.privacy.options import AttackOptions
    from genefl.privacy.study import run_attack_study

    source = _source(config)
    values = merge_options(config, preset, **options)
    values.pop("repeats", None)
    names = {f.name for f in option_fields(AttackOptions)}
    attack_options = build(
        AttackOptions, {k: values.pop(k) for k in list(values) if k in names}, source
    )
    values.pop("output_dir", None)
    return run_attack_study(
        attack_options, values, output_dir=output_dir, overwrite=overwrite, source=source,
        preset=preset, quiet=quiet, log=_log(log, quiet),
    )
