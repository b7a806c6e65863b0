"""Optional TensorBoard logging of every round (``--tensorboard DIR``).

Needs the ``tensorboard`` package (``pip install tensorboard`` or the ``tensorboard``
extra); genefl runs without it, and asking for it without it fails before any work starts.
Each round's numeric fields (accuracies, bytes, gamma, counts, seconds, and any field a
later version adds) become the scalars ``<phase>/<field>`` at step = the run's round
number; the final numeric results become ``results/<key>`` at the step after the last
round. A resumed run drops what the interrupted one logged from its resume round on.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from genefl.callbacks.base import Callback, RoundRecord
from genefl.errors import ConfigError


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package can be imported."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def require_tensorboard() -> None:
    """Raise a ConfigError saying how to install TensorBoard, if it is not installed."""
    if not tensorboard_available():
        raise ConfigError(
            "--tensorboard needs the tensorboard package, which is not installed; "
            "pip install tensorboard (or pip install 'genefl[tensorboard]'), or drop "
            "--tensorboard"
        )


def numeric_items(values: dict[str, Any]) -> dict[str, float]:
    """The finite int/float values of ``values`` as floats (booleans, text, ``None``,
    NaN/inf, lists and dicts left out).
    """
    return {
        key: float(value) for key, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
    }


def round_scalars(record: RoundRecord) -> dict[str, float]:
    """Every numeric field of a round record but the round number (the step)."""
    scalars = numeric_items(dataclasses.asdict(record))
    scalars.pop("round", None)
    return scalars


class TensorBoardLogger(Callback):
    """Write each round's numeric fields and the final results as TensorBoard scalars."""

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None
        self.step = 0

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        from torch.utils.tensorboard import SummaryWriter

        resume = int(info.get("resume_round", 0))
        self.step = resume
        self.writer = SummaryWriter(str(self.log_dir), purge_step=resume or None)

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        if self.writer is None:
            return
        for name, value in round_scalars(record).items():
            self.writer.add_scalar(f"{record.phase}/{name}", value, global_step=record.round)
        self.writer.flush()
        self.step = record.round + 1

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        if self.writer is None:
            return
        for key, value in numeric_items(results).items():
            self.writer.add_scalar(f"results/{key}", value, global_step=self.step)
        self.writer.close()
        self.writer = None


def tensorboard_loggers(log_dir: str | None, *parts: str) -> list[Callback]:
    """``[TensorBoardLogger(log_dir/parts...)]``, or nothing when ``log_dir`` is ``None``."""
    return [] if log_dir is None else [TensorBoardLogger(Path(log_dir, *parts))]
