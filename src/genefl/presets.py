"""Named protocols for ``genefl run`` and ``genefl compare`` (``--preset NAME``).

Precedence: built-in defaults < preset < ``--config`` file < command-line options, so a
preset is a starting point that any option can change (e.g. ``--preset paper --dataset
svhn --data-dir ~/data``).
"""

from __future__ import annotations

from typing import Any

from genefl.errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    # SPEC §1: the paper's protocol. ResNet-18 on CIFAR-10 (choose cifar100/svhn with
    # --dataset), 50 + 50 clients, 10 per round, 100 + 50 rounds, 10 local epochs,
    # batch 64, SGD 0.01 / 0.9, K = 4, s = 4, 3 repeats. Meant for a GPU.
    "paper": {
        "dataset": "cifar10",
        "model": "resnet18",
        "partition": "shard",
        "shards": 4,
        "known_clients": 50,
        "agnostic_clients": 50,
        "clusters": 4,
        "known_rounds": 100,
        "agnostic_rounds": 50,
        "clients_per_round": 10,
        "local_epochs": 10,
        "batch_size": 64,
        "lr": 0.01,
        "momentum": 0.9,
        "train_fraction": 1.0,
        "repeats": 3,
    },
    # CI scale: Fashion-MNIST (Debian's dataset-fashion-mnist) with the small CNN, a
    # quarter of the training images, 20 + 20 clients, 5 per round, 20 + 10 rounds,
    # 2 local epochs; all nine methods in well under 15 minutes on 2 CPU cores.
    # Hyperparameters otherwise the paper's. Every method gets the same budget.
    "ci": {
        "dataset": "fashion-mnist",
        "model": "cnn",
        "partition": "shard",
        "shards": 4,
        "train_fraction": 0.25,
        "known_clients": 20,
        "agnostic_clients": 20,
        "clusters": 4,
        "known_rounds": 20,
        "agnostic_rounds": 10,
        "clients_per_round": 5,
        "local_epochs": 2,
        "batch_size": 64,
        "lr": 0.01,
        "momentum": 0.9,
        "repeats": 1,
    },
}


def preset_values(name: str | None) -> dict[str, Any]:
    """The option values of preset ``name`` (empty for ``None``)."""
    if name is None:
        return {}
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ConfigError(
            f"--preset must be one of {', '.join(PRESETS)}; got {name!r}"
        ) from None
