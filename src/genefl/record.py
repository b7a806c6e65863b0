"""One run with its files: what ``genefl run`` and each run of ``genefl compare`` write.

In ``folder``: ``config.toml`` (the resolved configuration), ``rounds.csv``,
``clients.jsonl``, ``results.json`` and the resumable ``checkpoint.pt``. Without a folder
the run writes nothing and only returns its results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from genefl.callbacks import Callback, ClientLog, ProgressBar, ResultsJSON, RoundsCSV
from genefl.config import RunConfig, dump_toml, resolved_dict
from genefl.data.datasets import ImageDataset
from genefl.engine.checkpoint import CHECKPOINT_FILE
from genefl.engine.simulation import run_simulation
from genefl.errors import ConfigError

#: the files a run writes into its folder (besides the checkpoint)
RUN_FILES = ("config.toml", "rounds.csv", "clients.jsonl", "results.json")


def make_dir(folder: Path) -> Path:
    """Create ``folder`` (and its parents) or raise a ConfigError naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output-dir {folder}: cannot create it ({exc.strerror})") from exc
    return folder


def write_config(folder: Path, config: RunConfig, params: Any) -> None:
    """Write ``folder/config.toml``: the resolved configuration, loadable with ``--config``."""
    (folder / "config.toml").write_text(
        "# resolved configuration of this run (usable with --config)\n"
        + dump_toml(resolved_dict(config, params))
    )


def run_recorded(
    config: RunConfig,
    params: Any,
    dataset: ImageDataset | None,
    folder: Path | None,
    *,
    resume: bool = False,
    quiet: bool = False,
    desc: str = "rounds",
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Run ``config`` on ``dataset`` (``None``: loaded here) and return its results dict.

    With a ``folder``, write :data:`RUN_FILES` and checkpoints there (``config.toml`` is
    kept as it is when resuming from the folder's checkpoint). ``callbacks`` run after
    the file writers; ``quiet`` hides the progress bar labelled ``desc``.
    """
    writers: list[Callback] = []
    checkpoint = None
    if folder is not None:
        make_dir(folder)
        if not resume:
            write_config(folder, config, params)
        writers = [
            RoundsCSV(folder / "rounds.csv"),
            ClientLog(folder / "clients.jsonl"),
            ResultsJSON(folder / "results.json"),
        ]
        checkpoint = folder / CHECKPOINT_FILE
    return run_simulation(
        config, params, [*writers, *callbacks, ProgressBar(disable=quiet, desc=desc)],
        dataset=dataset, checkpoint=checkpoint, resume=resume,
    )
