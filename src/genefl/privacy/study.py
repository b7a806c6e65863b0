"""The privacy study as one call: :func:`run_attack_study` (``genefl attack`` is a thin
layer over it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genefl.callbacks.progress import say
from genefl.config import RunConfig, dump_toml, resolved_dict
from genefl.data.datasets import ImageDataset
from genefl.errors import ConfigError
from genefl.options import as_dict
from genefl.privacy.experiment import MethodAttack, run_attack
from genefl.privacy.options import AttackOptions, base_method, parse_attack_methods, resolve_rounds


@dataclass
class AttackStudy:
    """What :func:`run_attack_study` found."""

    options: AttackOptions
    #: the first method's resolved run configuration (every method shares the protocol)
    config: RunConfig
    methods: list[str]
    #: the attacked known rounds (1-based)
    rounds: list[int]
    #: one entry per method, round and attack
    attacks: list[MethodAttack]
    #: the table rows (with the random-noise control of each round)
    rows: list[dict] = field(default_factory=list)
    #: where the files went (``None``: none written)
    output_dir: Path | None = None


def describe(options: AttackOptions, config: RunConfig, rounds: list[int]) -> str:
    """One sentence on what was attacked and how (the Markdown file's preamble)."""
    ig = options.ig(config.dataset)
    parts = []
    if "idlg" in options.attacks:
        parts.append(
            f"iDLG: L-BFGS up to {options.idlg_iterations} steps, lr {options.idlg_lr:g}, best "
            f"of {options.idlg_restarts} start(s)"
        )
    if "ig" in options.attacks:
        parts.append(
            f"Inverting Gradients: {ig.iterations} signed-Adam steps, lr {ig.lr:g}, TV "
            f"{ig.tv:g}, best of {ig.restarts} start(s)"
        )
    return (
        f"{config.dataset}, {config.model}, seed {config.seed}; victims after known round(s) "
        f"{', '.join(map(str, rounds))} of {config.known_rounds}; {options.images} x "
        f"{options.batch} image(s) per method and round; {'; '.join(parts)}."
    )


def run_attack_study(
    options: AttackOptions | None = None,
    run_values: Mapping[str, Any] | None = None,
    *,
    dataset: ImageDataset | None = None,
    output_dir: Path | str | None = None,
    overwrite: bool = False,
    source: str = "the arguments",
    preset: str | None = None,
    quiet: bool = True,
    log: Callable[[str], None] = say,
) -> AttackStudy:
    """Train each method of ``options.methods`` once (known phase) and attack its victims
    at each of ``options.attack_rounds`` with each attack of ``options.attack``
    (``options``: :class:`AttackOptions`, its defaults when ``None``).

    ``run_values`` are options of ``genefl run`` (protocol and method options, e.g.
    ``{"dataset": "fashion-mnist", "known_rounds": 10}``; its ``method`` is ignored). With
    ``output_dir`` the table, CSV, JSON, grid and ``attack_config.toml`` are written there
    (after each method, so an interruption keeps the methods done), refusing a directory
    that already holds ``attack.csv`` unless ``overwrite``. Everything is validated before
    any training; a bad value raises :class:`~genefl.errors.ConfigError`.
    """
    from genefl.compare import plan_runs
    from genefl.data.datasets import load_dataset
    from genefl.engine.simulation import resolve_device, validate_protocol
    from genefl.report.attack import write_attack_report

    options = options if options is not None else AttackOptions()
    values = {k: v for k, v in (run_values or {}).items() if k != "method"}
    methods = parse_attack_methods(options.methods)
    out = Path(output_dir) if output_dir is not None else None
    bases = list(dict.fromkeys(base_method(m) for m in methods))
    plan = dict(zip(bases, plan_runs(values, bases, 1, out or Path("unused"), source)))
    config, params = plan[bases[0]]
    resolve_device(config.device)
    if dataset is None:
        dataset = load_dataset(
            config.dataset, config.data_dir, config.image_size, config.cache_dir
        )  # missing/corrupt files fail here
    validate_protocol(config, dataset)
    rounds = resolve_rounds(options.attack_rounds, config.known_rounds)
    classes = dataset.num_classes // 2 + dataset.num_classes % 2
    if options.batch > classes:
        raise ConfigError(
            f"--batch {options.batch}: label inference needs distinct labels, and a known "
            f"client holds at most {classes} classes; choose --batch <= {classes}"
        )
    preamble = describe(options, config, rounds)
    if out is not None:
        if (out / "attack.csv").exists() and not overwrite:
            raise ConfigError(
                f"--output-dir {out} already holds attack.csv; choose another directory or "
                "pass --overwrite"
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--output-dir {out}: cannot create it ({exc.strerror})") from exc
        (out / "attack_config.toml").write_text(
            "# resolved configuration of this attack (usable with genefl attack --config)"
            + (f"; preset {preset}" if preset else "") + "\n"
            + dump_toml({
                **as_dict(options), "methods": ",".join(methods),
                "ig_tv": options.ig(config.dataset).tv,
                **{k: v for k, v in resolved_dict(config, params).items()
                   if k not in ("method", "output_dir")},
            })
        )
    log(f"attacking {', '.join(methods)} on {config.dataset} with "
        f"{' and '.join(options.attacks)} after known round(s) {', '.join(map(str, rounds))}"
        f": {options.images} victim gradient(s) of {options.batch} image(s) each"
        + (f" -> {out}/" if out is not None else ""))

    def callbacks_for(method: str) -> list:
        from genefl.callbacks import ProgressBar

        return [ProgressBar(disable=quiet, desc=f"{method} training")]

    def write_partial(done: list[MethodAttack]) -> None:  # files hold every finished method
        if out is not None:
            write_attack_report(done, config.seed, out, options.recognisable_psnr, preamble)

    attacks = run_attack(
        plan, methods, dataset, options, rounds, callbacks_for, log=log, progress=not quiet,
        on_method_done=write_partial,
    )
    if out is not None:
        rows = write_attack_report(attacks, config.seed, out, options.recognisable_psnr,
                                   preamble)
    else:
        from genefl.report.attack import attack_rows, noise_control

        rows = attack_rows(attacks, noise_control(attacks, config.seed),
                           options.recognisable_psnr)
    return AttackStudy(options, config, methods, rounds, attacks, rows, out)
