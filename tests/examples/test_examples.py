"""Every example in examples/ runs at its ``--tiny`` scale, as a user would run it, and
produces what its docstring promises, so that none of them rots."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import pytest

import genefl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, out: Path) -> str:
    """``python examples/<name>.py --tiny --out OUT`` with this genefl; its stdout."""
    src = Path(genefl.__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--tiny", "--out", str(out)],
        cwd=out.parent, env={**os.environ, "PYTHONPATH": path}, capture_output=True,
        text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def check_own_data(out: Path, stdout: str) -> None:
    assert "$ genefl run --dataset imagefolder" in stdout
    assert len(list((out / "data" / "train").iterdir())) == 10
    assert any((out / "data" / "test" / "seven").glob("*.png"))
    run = results(out / "run")
    assert run["dataset"] == "imagefolder" and run["run"]["config"]["image_size"] == 8
    assert 0 <= run["known_accuracy"] <= 1


def check_custom_model(out: Path, stdout: str) -> None:
    listed = next(line for line in stdout.splitlines() if line.startswith("models: "))
    assert listed.startswith("models: cnn, ") and listed.endswith(", mlp")  # built-ins first
    run = results(out)
    assert run["run"]["config"]["model"] == "mlp" and run["method"] == "genefl"
    assert run["num_layers"] == 3  # two linear layers and the LayerNorm


def check_plugin(out: Path, stdout: str) -> None:
    listed = [line for line in stdout.splitlines() if line.startswith("fedper ")]
    assert listed and listed[0].endswith("[plugin: genefl-fedper 0.1.0]"), stdout
    rows = csv_rows(out / "compare" / "compare.csv")
    assert list(rows) == ["fedavg", "fedper"]
    # FedPer keeps the head on the client: it uploads less than the whole model
    assert 0 < float(rows["fedper"]["upload_bytes"]) < float(rows["fedavg"]["upload_bytes"])
    assert sorted(p.name for p in (EXAMPLES / "plugin_method").iterdir()) == [
        "README.md", "genefl_fedper.py", "pyproject.toml"
    ]  # built from a copy: no build/ or .egg-info left in the sources


def check_api_plot(out: Path, stdout: str) -> None:
    assert "Known phase" in stdout and "Agnostic phase" in stdout
    image = matplotlib.image.imread(out / "accuracy.png")
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    assert list(csv_rows(out / "compare" / "compare.csv")) == ["fedavg", "genefl"]


CHECKS: dict[str, Callable[[Path, str], None]] = {
    "own_data_imagefolder": check_own_data,
    "custom_model": check_custom_model,
    "try_plugin": check_plugin,
    "api_plot": check_api_plot,
}


def test_every_example_is_checked() -> None:
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CHECKS)


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(CHECKS))
def test_example_runs_at_tiny_scale(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    CHECKS[name](out, run_example(name, out))
