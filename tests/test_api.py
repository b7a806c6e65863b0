"""Issue 15, Python API: ``genefl.run`` and ``genefl.compare`` take the CLI's options
(keyword arguments, a mapping, a TOML file or a RunConfig), return result objects, write
the CLI's files only when given an output folder, and fail with the CLI's ConfigError.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import genefl
from genefl.api import CompareResult, RunResult
from genefl.callbacks import Callback, RoundRecord
from genefl.cli import main
from genefl.config import RunConfig, load_toml
from genefl.errors import ConfigError, DataError
from genefl.record import RUN_FILES

#: a run of a few seconds: digits, 4 + 4 clients, 2 + 1 rounds of 1 epoch
TINY = dict(
    known_rounds=2, agnostic_rounds=1, local_epochs=1, known_clients=4, agnostic_clients=4,
    clusters=2, clients_per_round=2, train_fraction=0.3, device="cpu",
)
#: results that differ between two identical runs (and the run info, with its folder)
VARYING = ("wall_seconds", "peak_rss_mb", "run")


def cli_args(values: dict) -> list[str]:
    return [item for k, v in values.items() for item in (f"--{k.replace('_', '-')}", str(v))]


def same_results(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in VARYING} == {
        k: v for k, v in b.items() if k not in VARYING
    }


def test_import_genefl_is_cheap_and_compare_stays_the_function() -> None:
    code = (
        "import sys, genefl\n"
        "assert 'torch' not in sys.modules and 'genefl.api' not in sys.modules\n"
        "from genefl.compare import plan_runs\n"  # the submodule of the same name
        "import genefl.types, genefl.record\n"
        "from genefl import compare\n"
        "assert callable(genefl.run) and compare is genefl.compare\n"
        "assert compare.__module__ == 'genefl.api', compare\n"
        "assert genefl.record is sys.modules['genefl.record']\n"  # other submodules as usual
        "assert {'run', 'compare', 'RunResult', 'CompareResult'} <= set(dir(genefl))\n"
    )
    src = str(Path(genefl.__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, env={"PYTHONPATH": src}, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_run_in_memory_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[RoundRecord] = []

    class Rounds(Callback):
        def on_round_end(self, record: RoundRecord) -> None:
            seen.append(record)

    config = tmp_path / "c.toml"
    config.write_text('method = "genefl"\nlocal-epochs = 3\nlambda1 = 0.2\n')
    result = genefl.run(config, quiet=True, callbacks=[Rounds()], method="fedavg", **TINY)
    assert isinstance(result, RunResult) and result.output_dir is None
    assert list(tmp_path.iterdir()) == [config]  # no runs/ folder, no files
    assert result["method"] == "fedavg" == result.config.method  # argument beats file
    assert result.config.local_epochs == 1 and result.config.known_rounds == 2
    assert [r.phase for r in seen] == ["known", "known", "agnostic"]
    assert result["known_round_accuracy"] == [r.accuracy for r in seen[:2]]
    assert "known-client accuracy" in result.summary()


def test_run_with_output_dir_writes_what_the_cli_writes(tmp_path: Path) -> None:
    options = {**TINY, "method": "fedlp", "fedlp_keep_prob": 0.7}
    result = genefl.run(quiet=True, output_dir=tmp_path / "api", **options)
    assert result.output_dir == tmp_path / "api"
    assert result.params.fedlp_keep_prob == 0.7
    assert main(["run", "--quiet", "--output-dir", str(tmp_path / "cli"), *cli_args(options)]) == 0
    for name in RUN_FILES:
        assert (tmp_path / "api" / name).exists(), name
    api_json = json.loads((tmp_path / "api" / "results.json").read_text())
    cli_json = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert same_results(api_json, result.results)
    assert same_results(api_json, cli_json)
    assert api_json["run"]["config"] == {
        **cli_json["run"]["config"], "output_dir": str(tmp_path / "api")
    }
    assert load_toml(tmp_path / "api" / "config.toml") == {
        **load_toml(tmp_path / "cli" / "config.toml"), "output_dir": str(tmp_path / "api")
    }
    # like the CLI, refuses to overwrite results unless asked
    with pytest.raises(ConfigError, match="already holds results.json"):
        genefl.run(quiet=True, output_dir=tmp_path / "api", **options)


def test_compare_returns_every_run_and_the_summary_rows(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    lines: list[str] = []
    result = genefl.compare(
        RunConfig(**TINY), methods=["fedavg", "local"], repeats=2, output_dir=out,
        quiet=True, log=lines.append,
    )
    assert isinstance(result, CompareResult) and result.methods == ["fedavg", "local"]
    assert [r.config.seed for r in result.runs["fedavg"]] == [0, 1]
    second = result.runs["local"][1]
    assert second.output_dir == out / "local" / "seed1" and second["seed"] == 1
    assert json.loads((second.output_dir / "results.json").read_text())["upload_bytes"] == 0
    assert [row["method"] for row in result.rows] == ["fedavg", "local"]
    fedavg = result.runs["fedavg"]
    assert result.row("fedavg")["known_accuracy"] == pytest.approx(
        sum(r["known_accuracy"] for r in fedavg) / 2
    )
    with (out / "compare.csv").open() as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["fedavg", "local"]
    assert lines[0] == f"comparing fedavg, local on digits (2 seed(s) each) -> {out}/"
    assert "Known phase" in result.tables()
    with pytest.raises(KeyError, match="methods: fedavg, local"):
        result.row("genefl")

    # again: every run reused from its folder, same rows
    again = genefl.compare(RunConfig(**TINY), methods="fedavg,local", repeats=2,
                           output_dir=out, quiet=True, log=lines.append)
    assert sum("reusing finished run" in line for line in lines) == 4
    assert again.rows == result.rows
    assert all(same_results(a.results, b.results)
               for m in again.runs for a, b in zip(again.runs[m], result.runs[m]))


def test_compare_in_memory_reads_methods_and_repeats_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = genefl.compare({"methods": "local", "repeats": 1, **TINY}, quiet=True)
    assert result.output_dir is None and result.runs["local"][0].output_dir is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call, needle",
    [

        (lambda: genefl.run(lamda1=0.3), "unknown option 'lamda1' in the arguments"),
        (lambda: genefl.run(lr=0), "--lr must be > 0"),
        (lambda: genefl.run(shards="abc"), "--shards must be int"),
        (lambda: genefl.run(method="nope"), "--method must be one of"),
        (lambda: genefl.run(42), "config must be a TOML file path, a mapping"),
        (lambda: genefl.run("/nonexistent.toml"), "/nonexistent.toml does not exist"),
        (lambda: genefl.run(methods="fedavg"), "methods: a setting of compare()"),
        (lambda: genefl.run(preset="tiny"), "--preset must be one of"),
        (lambda: genefl.run(preset="ci", resume="x"), "drop --preset/--config"),
        (lambda: genefl.run(resume="/nonexistent"), "no config.toml there"),
        (lambda: genefl.compare(methods="fedavg,nope"), "--methods must be 'all' or"),
        (lambda: genefl.compare(repeats=0), "--repeats must be an integer >= 1"),
    ],
)
def test_bad_input_is_a_config_error(call, needle: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        call()
    assert needle in str(info.value)
    assert list(tmp_path.iterdir()) == []  # rejected before any work


def test_missing_data_is_a_data_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="/nonexistent"):
        genefl.compare(dataset="cifar10", data_dir="/nonexistent", output_dir="out")
    assert list(tmp_path.iterdir()) == []


def test_attack_in_memory_returns_the_table_rows_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = genefl.attack(
        methods="fedavg,genefl", attack="ig", attack_rounds="1", images=1, ig_iterations=2,
        ig_restarts=1, known_rounds=2, known_clients=4, agnostic_clients=4, clusters=1,
        clients_per_round=2, local_epochs=1, device="cpu",
    )
    assert study.methods == ["fedavg", "genefl"] and study.rounds == [1]
    assert {(a.method, a.round, a.attack) for a in study.attacks} == {
        ("fedavg", 1, "ig"), ("genefl", 1, "ig")}
    assert study.output_dir is None and not any(tmp_path.iterdir())
    with pytest.raises(genefl.ConfigError, match="--images must be >= 1"):
        genefl.attack(images=0)
