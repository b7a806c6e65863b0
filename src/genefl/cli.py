"""Command-line interface: ``genefl run`` and ``genefl methods``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from genefl.config import RunConfig, dump_toml, load_toml, resolve, resolved_dict
from genefl.errors import ConfigError, GeneflError
from genefl.options import base_type, flag, option_fields


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"genefl: error: {message} (see `genefl {self.prog.split()[-1]} --help`)\n")


def _add_fields(group: argparse._ArgumentGroup, cls: type, seen: set[str]) -> None:
    for f in option_fields(cls):
        if f.name in seen:
            continue
        seen.add(f.name)
        rule = f.metadata["rule"]
        tp, _ = base_type(cls, f)
        metavar = {int: "INT", float: "FLOAT", str: "STR", bool: "BOOL"}.get(tp, "VALUE")
        help_text = f"{rule.help} [{rule.describe()}; default: {f.default}]"
        if rule.choices or (rule.minimum is None and rule.maximum is None):
            help_text = f"{rule.help} [default: {f.default}]"
        group.add_argument(
            flag(f.name), dest=f.name, metavar=metavar if not rule.choices else None,
            choices=rule.choices, default=argparse.SUPPRESS, help=help_text,
            type=str,  # coerced and range-checked by genefl.options
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``genefl`` argument parser (options generated from the config dataclasses)."""
    from genefl.algorithms.registry import algorithm_names, get_algorithm_class

    parser = _Parser(prog="genefl", description="GENE-FL and baselines for dynamic agnostic FL.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one method (default: GENE-FL on digits)")
    run.add_argument("--config", metavar="FILE", help="TOML file of options (options override it)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--overwrite", action="store_true",
        help="allow writing into an output directory that already holds results",
    )
    seen: set[str] = set()
    _add_fields(run.add_argument_group("protocol"), RunConfig, seen)
    for name in algorithm_names():
        cls = get_algorithm_class(name)
        if option_fields(cls.params_cls):
            _add_fields(run.add_argument_group(f"{name} options"), cls.params_cls, seen)
    sub.add_parser("methods", help="list the registered methods")
    return parser


def _output_dir(config: RunConfig, overwrite: bool) -> Path:
    if config.output_dir:
        out = Path(config.output_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.method}-{config.dataset}-{stamp}"
    if (out / "results.json").exists() and not overwrite:
        raise ConfigError(
            f"--output-dir {out} already holds results.json; choose another directory or "
            "pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output-dir {out}: cannot create it ({exc.strerror})") from exc
    return out


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything, run, print the summary and write the files."""
    from genefl.callbacks import ClientLog, ProgressBar, ResultsJSON, RoundsCSV
    from genefl.data.datasets import load_dataset
    from genefl.engine.simulation import resolve_device, run_simulation
    from genefl.report.summary import format_summary

    file_values: dict[str, Any] = load_toml(args.config) if args.config else {}
    overrides = {
        k: v for k, v in vars(args).items()
        if k not in ("command", "config", "quiet", "overwrite")
    }
    config, params = resolve(file_values, overrides, source=args.config or "the command line")
    resolve_device(config.device)
    dataset = load_dataset(config.dataset, config.data_dir)  # missing/corrupt files fail here
    out = _output_dir(config, args.overwrite)
    (out / "config.toml").write_text(
        "# resolved configuration of this run (usable with --config)\n"
        + dump_toml(resolved_dict(config, params))
    )
    callbacks = [
        RoundsCSV(out / "rounds.csv"),
        ClientLog(out / "clients.jsonl"),
        ResultsJSON(out / "results.json"),
        ProgressBar(disable=args.quiet),
    ]
    results = run_simulation(config, params, callbacks, dataset=dataset)
    for note in results["notes"]:
        print(f"note: {note}")
    print(format_summary(results))
    print(f"results written to {out}/ (config.toml, rounds.csv, clients.jsonl, results.json)")
    return 0


def cmd_methods() -> int:
    """Print each registered method with what it exchanges."""
    from genefl.algorithms.registry import algorithm_names, get_algorithm_class

    for name in algorithm_names():
        cls = get_algorithm_class(name)
        print(f"{name:10s} uploads: {cls.exchanges}; new clients start from: {cls.initialises}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``genefl`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "methods":
            return cmd_methods()
        return cmd_run(args)
    except GeneflError as exc:
        print(f"genefl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genefl: interrupted; files written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
