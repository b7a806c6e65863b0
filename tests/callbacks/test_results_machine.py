"""``results.json`` records the machine and code of the run (``run.machine``)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from genefl import __version__
from genefl.callbacks import ResultsJSON
from genefl.machine import machine_info


def test_results_json_records_the_machine(tmp_path: Path) -> None:
    writer = ResultsJSON(tmp_path / "results.json")
    writer.on_run_start({"layers": ["fc"]})
    writer.on_run_end({"known_accuracy": 0.5})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["known_accuracy"] == 0.5 and saved["run"]["layers"] == ["fc"]
    machine = saved["run"]["machine"]
    assert set(machine) == set(machine_info())
    assert machine["python"] == platform.python_version()
    assert machine["genefl"] == __version__
    assert machine["gpu"] in ("none", "unknown") or machine["gpu"]
    assert isinstance(machine["memory_gib"], float) and machine["memory_gib"] > 0
    assert machine["git_commit"]  # a commit, or "unknown" outside a git checkout
