"""What the examples share: the ``--tiny`` switch, ``--out`` and CLI spelling of options.

``--tiny`` shrinks every run to seconds (4 + 4 clients, 2 + 1 rounds of 1 epoch, 30 % of
the training images); CI
runs each example that way so that none of them rots. Without it the examples use
genefl's default protocol (a few minutes each on 2 CPU cores).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

#: options of a run of a few seconds
TINY: dict[str, Any] = {
    "known_rounds": 2, "agnostic_rounds": 1, "local_epochs": 1, "known_clients": 4,
    "agnostic_clients": 4, "clusters": 2, "clients_per_round": 2, "train_fraction": 0.3,
    "device": "cpu",
}


def parse_args(doc: str | None, name: str) -> argparse.Namespace:
    """``--tiny`` and ``--out DIR`` (default ``runs/examples/<name>``)."""
    parser = argparse.ArgumentParser(
        description=(doc or "").splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="runs of seconds (CI)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "examples" / name,
                        help="output folder (default: %(default)s)")
    return parser.parse_args()


def scale(tiny: bool) -> dict[str, Any]:
    """The run options of the chosen scale (none: genefl's defaults)."""
    return dict(TINY) if tiny else {}


def cli_options(options: dict[str, Any]) -> list[str]:
    """``{"known_rounds": 2}`` -> ``["--known-rounds", "2"]``."""
    return [arg for key, value in options.items()
            for arg in (f"--{key.replace('_', '-')}", str(value))]
