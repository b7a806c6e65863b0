"""Callbacks that write a run's files: per-round CSV, per-client JSONL, results.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from genefl.callbacks.base import Callback, ClientRoundRecord, RoundRecord

ROUND_COLUMNS = [f.name for f in dataclasses.fields(RoundRecord)]


def json_safe(value: Any) -> Any:
    """NaN/inf become ``null`` so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file, fsync, then rename over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        json.dump(json_safe(data), fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RoundsCSV(Callback):
    """``rounds.csv``: one row per round, flushed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None
        self._writer: csv.DictWriter | None = None

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        resume = int(info.get("resume_round", 0))
        kept: list[dict[str, str]] = []
        if resume and self.path.exists():
            with self.path.open(newline="") as fh:
                kept = [r for r in csv.DictReader(fh) if int(r["round"]) < resume]
        self._fh = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=ROUND_COLUMNS, restval="")
        self._writer.writeheader()
        for row in kept:  # rows of the rounds a resumed run does not repeat
            self._writer.writerow({k: row.get(k, "") for k in ROUND_COLUMNS})

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        assert self._writer is not None and self._fh is not None
        row = dataclasses.asdict(record)
        for key in ("accuracy", "val_accuracy", "train_loss", "eval_accuracy",
                    "eval_accuracy_server"):
            if isinstance(row[key], float) and math.isnan(row[key]):
                row[key] = ""
        row["seconds"] = round(row["seconds"], 4)
        self._writer.writerow(row)
        self._fh.flush()

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ClientLog(Callback):
    """``clients.jsonl``: every client-round (layers uploaded, bytes, accuracies)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh = None

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        resume = int(info.get("resume_round", 0))
        kept: list[str] = []
        if resume and self.path.exists():
            with self.path.open() as fh:
                for line in fh:
                    try:
                        if int(json.loads(line)["round"]) < resume:
                            kept.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by the interruption
        self._fh = self.path.open("w")
        self._fh.writelines(kept)

    def on_client_end(self, record: ClientRoundRecord) -> None:  # noqa: D102
        assert self._fh is not None
        self._fh.write(json.dumps(json_safe(dataclasses.asdict(record))) + "\n")

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        if self._fh is not None:
            self._fh.flush()

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ResultsJSON(Callback):
    """``results.json``: the final results, plus the run info (layers, classes) and the
    machine that finished the run (``run.machine``, see :mod:`genefl.machine`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.info: dict[str, Any] = {}

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        self.info = info

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        from genefl.machine import machine_info

        write_json_atomic(self.path, {**results, "run": {**self.info, "machine": machine_info()}})
