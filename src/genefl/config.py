"""The run configuration: every number of the protocol (SPEC §1) in one frozen dataclass.

Algorithm-specific numbers (GENE-FL's ``lambda1`` ...) live in each algorithm's own
params dataclass; :func:`resolve` merges a TOML file, CLI overrides and defaults into
both, validating everything before any work starts.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genefl.errors import ConfigError
from genefl.options import as_dict, build, check_rules, option

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATASET_NAMES = (
    "digits", "fashion-mnist", "cifar10", "cifar100", "svhn", "imagefolder", "npz",
)


@dataclass(frozen=True)
class RunConfig:
    """The protocol of one run. Defaults are a scaled-down digits run (< 2 min on 2 CPUs);
    training hyperparameters are the paper's (batch 64, SGD lr 0.01, momentum 0.9,
    10 local epochs, K = 4, s = 4).
    """

    method: str = option("genefl", "federated algorithm (see `genefl methods`)")
    dataset: str = option("digits", "data set", choices=DATASET_NAMES)
    data_dir: str | None = option(
        None, "folder with the data set files (torchvision layout; for imagefolder "
        "DIR/train/<class>/*, DIR/test/<class>/*), or the .npz file for npz; not needed for "
        "digits"
    )
    image_size: int | None = option(
        None, "imagefolder: resize every image to N x N (default: the first training "
        "image's size)", minimum=1, maximum=4096,
    )
    cache_dir: str | None = option(
        None, "imagefolder: also keep the decoded images in this folder (.npz keyed by the "
        "files, sizes, times and image size), reused while nothing changes (default: memory "
        "only)"
    )
    train_fraction: float = option(
        1.0, "share of the training split used (stratified per class, seeded); < 1 for "
        "quick runs", minimum=0, maximum=1, exclusive_min=True,
    )
    partition: str = option("shard", "non-IID partitioner", choices=("shard", "dirichlet"))
    shards: int = option(4, "classes per client under sharding (s)", minimum=1)
    beta: float = option(0.5, "Dirichlet concentration (DDA beta)", minimum=0, exclusive_min=True)
    val_fraction: float = option(
        0.1, "share of each client's training part held out for validation",
        minimum=0, maximum=0.5,
    )
    model: str = option("cnn", "network: a registered model (see `genefl models`)")
    known_clients: int = option(20, "known clients N", minimum=1)
    agnostic_clients: int = option(20, "agnostic clients M", minimum=1)
    clusters: int = option(4, "clusters K (1 = no clustering)", minimum=1)
    clustering: str = option(
        "kmeans", "clustering of signatures: K-Means (paper) or PACFL's proximity",
        choices=("kmeans", "pacfl"),
    )
    signature_dim: int = option(5, "singular vectors per client signature (p = d)", minimum=1)
    known_rounds: int = option(30, "rounds of the known phase", minimum=1)
    agnostic_rounds: int = option(20, "rounds of the agnostic phase", minimum=0)
    clients_per_round: int = option(5, "clients sampled per round", minimum=1)
    local_epochs: int = option(10, "local epochs per round", minimum=1)
    batch_size: int = option(64, "local batch size", minimum=1)
    lr: float = option(0.01, "SGD learning rate", minimum=0, exclusive_min=True)
    momentum: float = option(0.9, "SGD momentum", minimum=0, maximum=1, exclusive_max=True)
    weight_decay: float = option(0.0, "SGD weight decay", minimum=0)
    aggregate_weighting: str = option(
        "uniform", "per-layer mean over senders: uniform (Eq. 10) or by sample count",
        choices=("uniform", "samples"),
    )
    dropout_rate: float = option(
        0.0, "probability that a sampled client fails mid-round (sends nothing)",
        minimum=0, maximum=1, exclusive_max=True,
    )
    max_update_ratio: float = option(
        1000.0, "server rejects an upload whose ||theta - Theta_k|| / max(||Theta_k||, 1) "
        "exceeds this (inf: no bound)", minimum=0, exclusive_min=True, allow_inf=True,
    )
    eval_every: int = option(
        0, "score every client of the phase (both views) after every N-th round, the "
        "first and the last; 0 = auto: every round when that costs under a tenth of the "
        "training time, else the smallest interval that does", minimum=0,
    )
    checkpoint_every: int = option(
        1, "write a resumable checkpoint every N rounds (0: never)", minimum=0
    )
    client_store: str = option(
        "auto", "where clients' models live between rounds: memory, disk (.npz files, only "
        "a round's participants in memory), or auto (disk above 1000 clients)",
        choices=("auto", "memory", "disk"),
    )
    seed: int = option(0, "seed of every random choice in the run", minimum=0)
    device: str = option("auto", "torch device: auto, cpu, cuda, cuda:N")
    workers: int = option(
        1, "processes that train a round's clients in parallel, alive for the whole run; "
        "auto = one per physical core, capped by --clients-per-round (1 for runs too small "
        "to pay for starting workers); 1 = one after the other in this process; the "
        "results are bit-identical for any count at the same --threads-per-worker",
        minimum=0, auto=True,
    )
    threads_per_worker: int = option(
        0, "torch threads of each worker; auto = the physical cores shared among the "
        "workers (with --workers 1: torch's default)", minimum=0, auto=True,
    )
    batched_clients: bool = option(
        False, "train a round's clients that have no local objective and equal training "
        "sizes together with torch.func.vmap (for GPUs; same results up to float rounding)",
    )
    output_dir: str | None = option(
        None, "where results go (default runs/<method>-<dataset>-<time>)"
    )

    def __post_init__(self) -> None:
        from genefl.models.registry import get_model_builder

        check_rules(self)
        get_model_builder(self.model)  # an unknown name lists the registered ones
        for name in ("image_size", "cache_dir"):
            if getattr(self, name) is not None and self.dataset != "imagefolder":
                raise ConfigError(
                    f"--{name.replace('_', '-')} applies to --dataset imagefolder only "
                    f"(the data set is {self.dataset})"
                )
        if self.clients_per_round > self.known_clients:
            raise ConfigError(
                f"--clients-per-round ({self.clients_per_round}) must be <= --known-clients "
                f"({self.known_clients})"
            )
        if self.agnostic_rounds > 0 and self.clients_per_round > self.agnostic_clients:
            raise ConfigError(
                f"--clients-per-round ({self.clients_per_round}) must be <= --agnostic-clients "
                f"({self.agnostic_clients})"
            )
        if self.clusters > self.known_clients:
            raise ConfigError(
                f"--clusters ({self.clusters}) must be <= --known-clients ({self.known_clients})"
            )
        if self.batched_clients and self.workers > 1:
            raise ConfigError(
                f"--batched-clients trains a round's clients together in one process; it "
                f"cannot be combined with --workers {self.workers}: use --workers 1 (or "
                "auto) with it, or drop --batched-clients"
            )
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")
                or self.device == "mps"):
            raise ConfigError(
                f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}"
            )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML config file (keys are option names with ``_`` or ``-``)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: file {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: {path} is not valid TOML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path} ({exc})") from exc
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            raise ConfigError(
                f"--config: {path}: tables are not supported ([{key}]); write every option "
                "as a top-level key"
            )
        flat[key.replace("-", "_")] = value
    return flat


def dump_toml(values: Mapping[str, Any]) -> str:
    """Write flat scalar values as TOML (``None`` values are written as comments)."""
    lines = []
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} = (unset)")
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value!r}")
        else:
            escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{key} = "{escaped}"')
    return "\n".join(lines) + "\n"


def split_values(
    values: Mapping[str, Any], params_cls: type, source: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split raw option values into run-config and algorithm-param parts."""
    from genefl.algorithms.registry import all_param_names

    run_names = {f for f in RunConfig.__dataclass_fields__}
    param_names = set(getattr(params_cls, "__dataclass_fields__", {}))
    run_part, param_part = {}, {}
    for key, value in values.items():
        if key in run_names:
            run_part[key] = value
        elif key in param_names:
            param_part[key] = value
        elif key in all_param_names():
            continue  # another method's option: harmless, ignored
        else:
            raise ConfigError(f"unknown option {key!r} in {source}")
    return run_part, param_part


def resolve(
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    source: str = "the config file",
) -> tuple[RunConfig, Any]:
    """Merge defaults < config file < CLI overrides into ``(RunConfig, method params)``."""
    from genefl.algorithms.registry import get_algorithm_class

    merged = dict(file_values or {})
    merged.update(overrides or {})
    method = merged.get("method", RunConfig.method)
    cls = get_algorithm_class(str(method))
    run_part, param_part = split_values(merged, cls.params_cls, source)
    config = build(RunConfig, run_part, source)
    params = build(cls.params_cls, param_part, source)
    return config, params


def resolved_dict(config: RunConfig, params: Any) -> dict[str, Any]:
    """The full resolved configuration as one flat dict (written beside results)."""
    out = as_dict(config)
    out.update(as_dict(params))
    return out
