"""A tqdm progress bar over all rounds of a run."""

from __future__ import annotations

import math
from typing import Any

from tqdm.auto import tqdm

from genefl.callbacks.base import Callback, RoundRecord


class ProgressBar(Callback):
    """One bar for the whole run; the postfix shows phase, accuracy and uploads."""

    def __init__(self, disable: bool = False, desc: str = "rounds") -> None:
        self.disable = disable
        self.desc = desc
        self.bar: Any = None

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        self.bar = tqdm(
            total=info["total_rounds"], initial=int(info.get("resume_round", 0)),
            desc=self.desc, unit="round", disable=self.disable,
            dynamic_ncols=True, leave=False,
        )

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        if self.bar is None:
            return
        acc = "-" if math.isnan(record.accuracy) else f"{record.accuracy:.3f}"
        self.bar.set_postfix_str(
            f"{record.phase} acc={acc} up={record.cum_upload_bytes / 2**20:.1f}MiB"
            + (f" gamma={record.gamma}" if record.gamma is not None else "")
        )
        self.bar.update(1)

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        if self.bar is not None:
            self.bar.close()


def say(line: str) -> None:
    """Print one progress line at once (flushed, so a redirected log shows it live)."""
    print(line, flush=True)
