"""The options of ``genefl attack``, declared like every other option of genefl
(:func:`genefl.options.option`: one definition gives the CLI flag, its ``--help``, the
TOML key and the range check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from genefl.errors import ConfigError
from genefl.options import check_rules, option
from genefl.privacy.idlg import IDLGSettings
from genefl.privacy.ig import IGSettings

#: a method name with this suffix is the method with Gaussian noise on the shared gradient
DP_SUFFIX = "-dp"
#: ``--methods all``: the paper's five (SPEC §8)
DEFAULT_ATTACK_METHODS = ("fedavg", "fedavg-dp", "parfed", "fedlg", "genefl")
#: ``--methods every``: every registered method (and FedAvg with noise)
EVERY = "every"
ATTACKS = ("idlg", "ig")

#: the total-variation weight of Inverting Gradients when ``--ig-tv`` is not given, by
#: data set (how these were chosen: docs/privacy.md); other sets take ``DEFAULT_TV``
TV_BY_DATASET = {"digits": 1e-2, "fashion-mnist": 1e-2}
DEFAULT_TV = 1e-2


@dataclass(frozen=True)
class AttackOptions:
    """What ``genefl attack`` does besides the run protocol (the run's options are those
    of ``genefl run``).
    """

    methods: str = option(
        "all", "'all' (the paper's five: fedavg, fedavg-dp, parfed, fedlg, genefl), 'every' "
        "(every registered method and fedavg-dp) or a comma-separated list of methods (see "
        "`genefl methods`), each optionally with '-dp' (Gaussian noise on the shared "
        "gradient)",
    )
    attack: str = option(
        "both", "inversion attack: idlg (Zhao et al. 2020, L-BFGS on the L2 gradient "
        "distance), ig (Inverting Gradients, Geiping et al. 2020: cosine distance, TV "
        "prior, signed Adam) or both", choices=("idlg", "ig", "both"),
    )
    attack_rounds: str = option(
        "1,last", "known rounds after which the victims are attacked, comma-"
        "separated: numbers from 1, 'middle' (half of --known-rounds, rounded up) and "
        "'last'; one training run per method serves every round",
    )
    images: int = option(4, "victim gradients attacked per method and round", minimum=1)
    batch: int = option(
        1, "images per victim gradient (1 = iDLG's setting; larger batches infer labels "
        "assuming they are distinct)", minimum=1,
    )
    dp_sigma2: float = option(
        1e-3, "variance of the Gaussian noise added to the shared gradient by "
        "'<method>-dp' (the paper's sigma^2)", minimum=0, exclusive_min=True,
    )
    idlg_iterations: int = option(
        300, "iDLG: L-BFGS steps per start (each up to 20 evaluations; a start stops once "
        "its loss stalls)", minimum=1,
    )
    idlg_lr: float = option(1.0, "iDLG: L-BFGS step size", minimum=0, exclusive_min=True)
    idlg_restarts: int = option(
        2, "iDLG: random starts per victim gradient; the one whose gradient matches best "
        "is kept (no ground truth)", minimum=1,
    )
    ig_iterations: int = option(
        1000, "Inverting Gradients: signed-Adam steps per start (the learning rate drops "
        "x0.1 at 3/8, 5/8 and 7/8 of them; the paper: 4800)", minimum=1,
    )
    ig_lr: float = option(
        0.1, "Inverting Gradients: Adam learning rate", minimum=0, exclusive_min=True
    )
    ig_tv: float | None = option(
        None, "Inverting Gradients: weight of the total-variation prior (none: the data "
        "set's default, " + ", ".join(f"{k} {v:g}" for k, v in TV_BY_DATASET.items())
        + f", others {DEFAULT_TV:g}; see docs/privacy.md)", minimum=0,
    )
    ig_restarts: int = option(
        1, "Inverting Gradients: random starts per victim gradient; the one whose gradient "
        "matches best (cosine) is kept (no ground truth)", minimum=1,
    )
    recognisable_psnr: float = option(
        15.0, "an image counts as recognisable when its reconstruction's PSNR is above this "
        "many dB (15 dB: root-mean-square error below 0.18 of the pixel range)", minimum=0,
    )

    def __post_init__(self) -> None:
        check_rules(self)
        parse_attack_methods(self.methods)
        parse_rounds(self.attack_rounds)

    @property
    def attacks(self) -> tuple[str, ...]:
        """The attacks to run, in table order."""
        return ATTACKS if self.attack == "both" else (self.attack,)

    @property
    def idlg(self) -> IDLGSettings:
        """The iDLG settings these options choose."""
        return IDLGSettings(
            iterations=self.idlg_iterations, lr=self.idlg_lr, restarts=self.idlg_restarts
        )

    def ig(self, dataset: str) -> IGSettings:
        """The Inverting Gradients settings these options choose on ``dataset``."""
        tv = self.ig_tv if self.ig_tv is not None else TV_BY_DATASET.get(dataset, DEFAULT_TV)
        return IGSettings(
            iterations=self.ig_iterations, lr=self.ig_lr, tv=tv, restarts=self.ig_restarts
        )


def parse_attack_methods(spec: str | Sequence[str]) -> list[str]:
    """Comma-separated registered names, each optionally with ``-dp``; ``all`` = the
    paper's five (:data:`DEFAULT_ATTACK_METHODS`), ``every`` = every registered method
    followed by ``fedavg-dp``.
    """
    from genefl.algorithms.registry import algorithm_names

    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    known = algorithm_names()
    if names == ["all"]:
        return list(DEFAULT_ATTACK_METHODS)
    if names == [EVERY]:
        return [*known, "fedavg-dp"]
    bad = [n for n in names if base_method(n) not in known]
    if bad or not names:
        raise ConfigError(
            f"--methods must be 'all', '{EVERY}' or a comma-separated list of "
            f"{', '.join(known)} (any of them with '{DP_SUFFIX}' for Gaussian noise on the "
            f"shared gradient); got {','.join(bad or names) or 'nothing'!r}"
        )
    return list(dict.fromkeys(names))


def base_method(name: str) -> str:
    """``fedavg-dp`` -> ``fedavg``."""
    return name[: -len(DP_SUFFIX)] if name.endswith(DP_SUFFIX) else name


def parse_rounds(spec: str) -> list[int | str]:
    """``"1,middle,last"`` -> ``[1, "middle", "last"]`` (syntax only; see
    :func:`resolve_rounds`).
    """
    out: list[int | str] = []
    for token in (t.strip().lower() for t in str(spec).split(",")):
        if token in ("middle", "last"):
            out.append(token)
            continue
        try:
            value = int(token)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(
                "--attack-rounds must be a comma-separated list of known rounds: numbers "
                f">= 1, 'middle' or 'last'; got {spec!r}"
            )
        out.append(value)
    return out


def resolve_rounds(spec: str, known_rounds: int) -> list[int]:
    """The known rounds (1-based, ascending, without repeats) that ``spec`` names in a
    run of ``known_rounds`` rounds: ``middle`` is ``ceil(known_rounds / 2)``.
    """
    rounds = []
    for token in parse_rounds(spec):
        if token == "last":
            value = known_rounds
        elif token == "middle":
            value = (known_rounds + 1) // 2
        else:
            value = int(token)
        if value > known_rounds:
            raise ConfigError(
                f"--attack-rounds {spec}: round {value} is beyond --known-rounds "
                f"({known_rounds})"
            )
        rounds.append(value)
    return sorted(set(rounds))
