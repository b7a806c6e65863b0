"""`genefl sweep`: a grid over options x seeds, resumable, with a tidy CSV and a summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from genefl.cli import main
from genefl.errors import ConfigError
from genefl.sweep import cell_name, grid_points, parse_sweep

TINY_BASE = """
[base]
method = "fedavg"
known_rounds = 2
agnostic_rounds = 1
local_epochs = 1
known_clients = 6
agnostic_clients = 6
clusters = 2
clients_per_round = 3
device = "cpu"
"""


def _write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_grids_are_products_and_the_sweep_is_their_union(tmp_path: Path) -> None:
    points = grid_points([{"lr": [0.1, 0.2], "local_epochs": [1, 2]}, {"lr": 0.1}], tmp_path)
    assert len(points) == 5
    assert points[0] == {"lr": 0.1, "local_epochs": 1}
    assert {"lr": 0.1} in points
    assert cell_name({"lr": 0.1, "method": "fedavg"}) == "lr=0.1,method=fedavg"
    assert cell_name({}) == "base"
    assert cell_name({"data_dir": "/a b"}) == "data_dir=_a_b"


def test_a_cell_defined_twice_runs_once(tmp_path: Path) -> None:
    """The default value of two one-at-a-time grids is one run, not two."""
    path = _write(tmp_path, 'repeats = 2\n' + TINY_BASE.replace('"fedavg"', '"genefl"') + """
[[grid]]
lambda1 = [0.0, 0.5]
[[grid]]
lambda2 = [0.05, 0.1]
""")
    sweep = parse_sweep(path, tmp_path / "out")
    # lambda1=0.5 and lambda2=0.05 are both the defaults: the same configuration
    assert [c.name for c in sweep.cells] == ["lambda1=0.0", "lambda1=0.5", "lambda2=0.1"]
    assert sweep.total_runs == 6
    assert sweep.cells[2].swept == {"lambda1": 0.5, "lambda2": 0.1}
    assert [cfg.seed for cfg, _ in sweep.cells[0].runs] == [0, 1]


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown key(s) bogus"),
    ("repeats = 0\n", "repeats must be an integer >= 1"),
    ("[[grid]]\nlr = []\n", "lr has an empty list"),
    ("[[grid]]\nlr = [0.1, -1.0]\n", "cell lr=-1.0"),
    ("[[grid]]\nseed = [1, 2]\n", "sweeps seed"),
    ("[base]\nno_such_option = 1\n", "unknown option 'no_such_option'"),
    ("[[grid]]\nmethod = ['fedavg', 'nope']\n", "cell method=nope"),
    ("[base]\npreset = 'nope'\n", "--preset must be one of"),
    ("[base\n", "is not valid TOML"),
])
def test_invalid_sweep_files_fail_before_any_work(tmp_path: Path, capsys, text: str,
                                                  message: str) -> None:
    path = _write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"sweep file {path}" in err and message in err, err
    assert err.count("\n") == 1  # one line
    assert not out.exists()  # nothing written


def test_missing_sweep_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        parse_sweep(tmp_path / "none.toml")


@pytest.mark.e2e
def test_tiny_sweep_runs_resumes_and_writes_tidy_tables(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, 'name = "tiny"\nrepeats = 2\n' + TINY_BASE + """
[[grid]]
lr = [0.01, 0.05]
""")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--output-dir", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 cell(s) x 2 seed(s) = 4 runs" in printed
    assert printed.count("[") >= 4 and "[4/4] lr=0.05 seed 1" in printed  # a line per run
    rows = _rows(out / "runs.csv")
    assert [(r["cell"], r["lr"], r["seed"]) for r in rows] == [
        ("lr=0.01", "0.01", "0"), ("lr=0.01", "0.01", "1"),
        ("lr=0.05", "0.05", "0"), ("lr=0.05", "0.05", "1"),
    ]
    for row in rows:  # every number of results.json, both views
        res = json.loads((out / "cells" / row["cell"] / f"seed{row['seed']}" /
                          "results.json").read_text())
        assert float(row["known_accuracy"]) == pytest.approx(res["known_accuracy"])
        assert float(row["known_accuracy_server"]) == pytest.approx(res["known_accuracy_server"])
        assert int(row["upload_bytes"]) == res["upload_bytes"]
    summary = _rows(out / "summary.csv")
    assert [s["cell"] for s in summary] == ["lr=0.01", "lr=0.05"]
    first = [float(r["known_accuracy"]) for r in rows[:2]]
    assert float(summary[0]["known_accuracy"]) == pytest.approx(sum(first) / 2)
    assert float(summary[0]["known_accuracy_std"]) == pytest.approx(abs(first[0] - first[1]) / 2)
    table = (out / "summary.md").read_text()
    assert "| lr=0.01 | 0.01 | 2 |" in table and "±" in table
    assert (out / "sweep.toml").read_text() == path.read_text()

    # an interrupted sweep: one run never finished; rerunning redoes only that run
    victim = out / "cells" / "lr=0.05" / "seed0" / "results.json"
    victim.unlink()
    kept = out / "cells" / "lr=0.01" / "seed1" / "results.json"
    stamp = kept.stat().st_mtime_ns
    assert main(["sweep", str(path), "--output-dir", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("(reused)") == 3
    assert victim.exists() and kept.stat().st_mtime_ns == stamp
    timing = ("wall_seconds", "peak_rss_mb")
    again = _rows(out / "runs.csv")
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows]  # the same numbers


@pytest.mark.e2e
def test_resume_of_a_finished_run_prints_its_summary_and_exits_0(tmp_path: Path,
                                                                  capsys) -> None:
    out = tmp_path / "run"
    args = ["--known-rounds", "1", "--agnostic-rounds", "0", "--local-epochs", "1",
            "--known-clients", "4", "--agnostic-clients", "4", "--clusters", "1",
            "--clients-per-round", "2", "--device", "cpu", "--quiet"]
    assert main(["run", "--output-dir", str(out), *args]) == 0
    stamp = (out / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "already finished" in printed and "known-client accuracy" in printed
    assert (out / "results.json").stat().st_mtime_ns == stamp  # nothing rerun


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "studies").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_study_files_are_valid(path: Path) -> None:
    sweep = parse_sweep(path)
    # every study has 3 seeds but the ResNet-20 one sized for a 2-core CPU
    assert sweep.repeats == (1 if path.stem == "resnet20-small" else 3) and sweep.cells
    assert sweep.name == path.stem


def test_repeats_override_and_moved_runs_still_match(tmp_path: Path) -> None:
    from genefl.engine.server import config_differences

    path = _write(tmp_path, "repeats = 3\n" + TINY_BASE + "[[grid]]\nlr = [0.01, 0.05]\n")
    sweep = parse_sweep(path, tmp_path / "out", repeats_override=1)
    assert sweep.repeats == 1 and sweep.total_runs == 2
    assert config_differences({"output_dir": "a", "lr": 0.1}, {"output_dir": "b", "lr": 0.1}) == []
    assert config_differences({"lr": 0.1}, {"lr": 0.2}) == ["lr: checkpoint 0.1, now 0.2"]
