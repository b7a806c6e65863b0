"""Command-line interface: ``genefl run``, ``compare``, ``attack``, ``methods``, ``models``
and ``flower init``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

from genefl.config import RunConfig
from genefl.errors import ConfigError, GeneflError
from genefl.options import base_type, flag, option_fields
from genefl.plugins import PluginWarning


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"genefl: error: {message} (see `genefl {self.prog.split()[-1]} --help`)\n")


def _add_tensorboard(parser: argparse.ArgumentParser, where: str = "") -> None:
    """``--tensorboard DIR``: an output option (not part of the run's configuration)."""
    parser.add_argument(
        "--tensorboard", metavar="DIR", default=None,
        help=f"also log every round's metrics for TensorBoard into DIR{where} (needs "
        "`pip install tensorboard`)",
    )


def _add_fields(group: argparse._ArgumentGroup, cls: type, seen: set[str]) -> None:
    for f in option_fields(cls):
        if f.name in seen:
            continue
        seen.add(f.name)
        rule = f.metadata["rule"]
        tp, _ = base_type(cls, f)
        metavar = {int: "INT", float: "FLOAT", str: "STR", bool: "BOOL"}.get(tp, "VALUE")
        default = "auto" if rule.auto and f.default == 0 else f.default
        help_text = f"{rule.help} [{rule.describe()}; default: {default}]"
        if rule.choices or (rule.minimum is None and rule.maximum is None):
            help_text = f"{rule.help} [default: {default}]"
        group.add_argument(
            flag(f.name), dest=f.name, metavar=metavar if not rule.choices else None,
            choices=rule.choices, default=argparse.SUPPRESS, help=help_text,
            type=str,  # coerced and range-checked by genefl.options
        )


def _add_common(parser: argparse.ArgumentParser, with_method: bool) -> None:
    """Options shared by ``run`` and ``compare``: files, presets, protocol, method options."""
    from genefl.algorithms.registry import algorithm_names, get_algorithm_class
    from genefl.presets import PRESETS

    parser.add_argument(
        "--config", metavar="FILE", help="TOML file of options (options override it)"
    )
    parser.add_argument(
        "--preset", choices=list(PRESETS), default=None,
        help="start from a named protocol: paper (SPEC §1 scale, ResNet-18, for a GPU) or ci "
        "(Fashion-MNIST, small CNN, minutes on a CPU); --config and options override it",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="allow writing into an output directory that already holds results",
    )
    seen: set[str] = set() if with_method else {"method"}
    _add_fields(parser.add_argument_group("protocol"), RunConfig, seen)
    for name in algorithm_names():
        cls = get_algorithm_class(name)
        if option_fields(cls.params_cls):
            _add_fields(parser.add_argument_group(f"{name} options"), cls.params_cls, seen)


def build_parser() -> argparse.ArgumentParser:
    """The ``genefl`` argument parser (options generated from the config dataclasses)."""
    parser = _Parser(prog="genefl", description="GENE-FL and baselines for dynamic agnostic FL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one method (default: GENE-FL on digits)")
    run.add_argument(
        "--resume", metavar="OUTPUT_DIR", default=None,
        help="continue an interrupted run from its last checkpoint (needs no other option)",
    )
    _add_common(run, with_method=True)
    _add_tensorboard(run)
    compare = sub.add_parser(
        "compare", help="run several methods side by side and write the paper's tables"
    )
    compare.add_argument(
        "--methods", default=None,
        help="'all' or a comma-separated list of methods (see `genefl methods`) [default: all]",
    )
    compare.add_argument(
        "--repeats", default=None, metavar="INT",
        help="seeds per method (seed, seed+1, ...); tables show mean ± std "
        "[default: the preset's, else 1]",
    )
    _add_common(compare, with_method=False)
    _add_tensorboard(compare, " (one folder per method and seed: DIR/<method>/seed<N>)")
    attack = sub.add_parser(
        "attack", help="gradient inversion (iDLG, Inverting Gradients) against each method's "
        "shared layers, by training round (PSNR, SSIM, recognisable share)",
    )
    from genefl.privacy.options import AttackOptions

    _add_fields(attack.add_argument_group("attack"), AttackOptions, set())
    _add_common(attack, with_method=False)
    sweep = sub.add_parser(
        "sweep", help="run a grid of options x seeds from a sweep file (resumable) and "
        "write a tidy CSV and a mean ± std summary",
    )
    sweep.add_argument("sweep_file", metavar="SWEEP.toml", help="the sweep file (see "
                       "studies/ for examples)")
    sweep.add_argument("--output-dir", default=None, dest="output_dir",
                       help="where the cells go [default: the file's output_dir, else "
                       "runs/sweep-<name>]")
    sweep.add_argument("--overwrite", action="store_true",
                       help="rerun finished cells instead of reusing them")
    sweep.add_argument("--jobs", default="1", metavar="INT",
                       help="runs at once, in worker processes sharing the cores "
                       "[>= 1; default: 1]")
    sweep.add_argument("--repeats", default=None, metavar="INT",
                       help="seeds per cell instead of the file's repeats (a first pass "
                       "with fewer seeds is reused by a later full one)")
    sweep.add_argument("--dry-run", action="store_true", dest="dry_run",
                       help="check the file and list the cells, run nothing")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("methods", help="list the registered methods")
    sub.add_parser("models", help="list the registered models (--model)")
    learngene = sub.add_parser(
        "learngene", help="which layers a finished run uploaded per gamma and kept as its "
        "learnGene, with their share of the model's bytes (writes learngene.md/.csv)",
    )
    learngene.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's output directory")
    flower = sub.add_parser("flower", help="run genefl as a Flower federation (needs the "
                            "flower extra)")
    flower_sub = flower.add_subparsers(dest="flower_command", required=True,
                                       parser_class=_Parser)
    init = flower_sub.add_parser(
        "init", help="write a Flower app directory (pyproject.toml with genefl's ServerApp, "
        "ClientApp and these options as its run config) for `flwr run`",
    )
    init.add_argument("app_dir", metavar="DIR", help="the app directory to write")
    init.add_argument("--connection", default="genefl",
                      help="SuperLink connection name shown in the printed commands")
    _add_common(init, with_method=True)
    from genefl.flower.runconfig import FlowerOptions

    _add_fields(init.add_argument_group("flower"), FlowerOptions, {"overwrite"})
    _add_report_parser(sub)
    return parser


#: keys of the command line that are not run options
_NOT_OPTIONS = (
    "command", "config", "quiet", "overwrite", "preset", "methods", "repeats", "resume",
    "flower_command", "app_dir", "connection", "tensorboard",
)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options typed on the command line (strings; checked by genefl.options)."""
    return {k: v for k, v in vars(args).items() if k not in _NOT_OPTIONS}


def _merged_values(args: argparse.Namespace) -> dict[str, Any]:
    """Preset < config file < command-line options, as one flat dict."""
    from genefl.api import merge_options

    return merge_options(args.config, args.preset, **_options(args))


def _source(args: argparse.Namespace) -> str:
    return args.config or "the command line"


def _default_output_dir(values: dict[str, Any], prefix: str) -> dict[str, str]:
    """``{"output_dir": runs/<prefix>-<dataset>-<time>}`` unless one is set already."""
    if values.get("output_dir"):
        return {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dataset = values.get("dataset", RunConfig.dataset)
    return {"output_dir": str(Path("runs") / f"{prefix}-{dataset}-{stamp}")}


def cmd_run(args: argparse.Namespace) -> int:
    """``genefl.run`` with the command line's options; print the notes and the summary."""
    from genefl.api import run
    from genefl.callbacks.progress import say
    from genefl.record import RUN_FILES

    options = _options(args)
    if not args.resume:
        values = _merged_values(args)
        options.update(_default_output_dir(values, values.get("method", RunConfig.method)))
    result = run(
        args.config, preset=args.preset, resume=args.resume, overwrite=args.overwrite,
        quiet=args.quiet, log=say, tensorboard=args.tensorboard, **options,
    )
    for note in result.notes:
        print(f"note: {note}")
    print(result.summary())
    print(f"results written to {result.output_dir}/ ({', '.join(RUN_FILES)})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``genefl.compare`` with the command line's options; print the tables."""
    from genefl.api import compare
    from genefl.callbacks.progress import say
    from genefl.compare import COMPARE_FILES

    options = _options(args)
    options.update(_default_output_dir(_merged_values(args), "compare"))
    result = compare(
        args.config, methods=args.methods, repeats=args.repeats, preset=args.preset,
        overwrite=args.overwrite, quiet=args.quiet, log=say, tensorboard=args.tensorboard,
        **options,
    )
    print()
    print(result.tables())
    print(f"\nwritten to {result.output_dir}/: {', '.join(COMPARE_FILES)}, "
          "compare_config.toml, and one folder per method and seed")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    """Read the attack's and the run's options, run the study, print the table."""
    from genefl.api import attack
    from genefl.report.attack import ATTACK_FILES, format_attack_table

    values = _merged_values(args)
    if hasattr(args, "methods"):
        values["methods"] = args.methods
    dataset_name = values.get("dataset", RunConfig.dataset)
    out = Path(
        values.pop("output_dir", None)
        or Path("runs") / f"attack-{dataset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    study = attack(values, preset=args.preset, output_dir=out, overwrite=args.overwrite,
                   quiet=args.quiet, log=print)
    print()
    print(format_attack_table(study.rows))
    for a in study.attacks:
        if a.note:
            print(f"note: {a.method} round {a.round} {a.attack}: {a.note}")
    print(f"\nwritten to {out}/: {', '.join(ATTACK_FILES)}, attack_config.toml")
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    """``genefl flower init DIR``: write the app directory and say how to run it."""
    from genefl.flower.deploy import describe, write_app

    values = _merged_values(args)
    values.pop("repeats", None)
    values.pop("methods", None)
    if args.overwrite:
        values["overwrite"] = True
    folder = write_app(args.app_dir, values)
    print(describe(folder, values, args.connection))
    return 0


def _positive_int(text: str, name: str) -> int:
    """``text`` as an integer >= 1, or a ConfigError naming ``name``."""
    try:
        value = int(text)
        if value < 1:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{name} must be an integer >= 1; got {text!r}") from None
    return value


def cmd_sweep(args: argparse.Namespace) -> int:
    """Validate the whole sweep, then run (or reuse) its cells and write its tables."""
    from genefl.sweep import SWEEP_FILES, format_plan, parse_sweep, run_sweep

    jobs = _positive_int(args.jobs, "--jobs")
    repeats = None if args.repeats is None else _positive_int(args.repeats, "--repeats")
    sweep = parse_sweep(args.sweep_file, args.output_dir, args.overwrite, repeats)
    print(format_plan(sweep))
    if args.dry_run:
        for cell in sweep.cells:
            print(f"  {cell.name}: {len(cell.runs)} seed(s) -> "
                  f"{sweep.output_dir / 'cells' / cell.name}/")
        return 0
    run_sweep(sweep, overwrite=args.overwrite, quiet=args.quiet, jobs=jobs)
    print((sweep.output_dir / "summary.md").read_text())
    print(f"written to {sweep.output_dir}/: {', '.join(SWEEP_FILES)}, and cells/<cell>/"
          "seed<seed>/ for every run")
    return 0


def _add_report_parser(sub: Any) -> None:
    """``genefl report DIR [--output FILE]``."""
    report = sub.add_parser(
        "report", help="one self-contained HTML page (tables, plots, configuration, machine) "
        "of a run, compare, sweep or attack directory",
    )
    report.add_argument("report_dir", metavar="DIR",
                        help="the --output-dir of a genefl run, compare, sweep or attack")
    report.add_argument("--output", metavar="FILE", default=None,
                        help="where the page goes [default: DIR/report.html]")


def cmd_report(args: argparse.Namespace) -> int:
    """Write the HTML page of a results directory."""
    from genefl.report.page import detect_kind, write_report

    kind = detect_kind(args.report_dir)
    out = write_report(args.report_dir, args.output)
    print(f"{kind} report written to {out}")
    return 0


def _from_package(package: str | None) -> str:
    return f"  [plugin: {package}]" if package else ""


def cmd_methods() -> int:
    """Print each registered method with what it exchanges (and its package, if a plugin)."""
    from genefl.algorithms.registry import algorithm_names, algorithm_package, get_algorithm_class

    for name in algorithm_names():
        cls = get_algorithm_class(name)
        print(f"{name:10s} uploads: {cls.exchanges}; new clients start from: {cls.initialises}"
              + _from_package(algorithm_package(name)))
    return 0


def cmd_models() -> int:
    """Print each registered model with the first line of its builder's docstring."""
    from genefl.models.registry import model_description, model_names, model_package

    for name in model_names():
        print(f"{name:10s} {model_description(name)}{_from_package(model_package(name))}")
    return 0


def cmd_learngene(args: argparse.Namespace) -> int:
    """Print and write the learnGene composition of a finished run."""
    from genefl.report.learngene import LEARNGENE_FILES, write_report

    print(write_report(Path(args.run_dir)), end="")
    print(f"\nwritten to {args.run_dir}/: {', '.join(LEARNGENE_FILES)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genefl`` console script."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_plugin_warning(message: Any, category: type[Warning], *rest: Any) -> None:
            """A plugin that failed to load as one ``genefl: warning: ...`` line."""
            if issubclass(category, PluginWarning):
                print(f"genefl: warning: {message}", file=sys.stderr)
            else:
                show(message, category, *rest)

        warnings.showwarning = show_plugin_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            return cmd_methods()
        if args.command == "models":
            return cmd_models()
        if args.command == "learngene":
            return cmd_learngene(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "attack":
            return cmd_attack(args)
        if args.command == "flower":
            return cmd_flower(args)
        if args.command == "sweep":
            return cmd_sweep(args)
        if args.command == "report":
            return cmd_report(args)
        return cmd_run(args)
    except GeneflError as exc:
        print(f"genefl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genefl: interrupted; files written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
