"""`genefl attack`: the privacy table, CSV, JSON and image grid (issue 6)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from genefl.cli import main
from genefl.config import load_toml
from genefl.privacy.experiment import (
    DEFAULT_ATTACK_METHODS,
    AttackOptions,
    parse_attack_methods,
    run_attack,
)
from genefl.privacy.idlg import AttackSettings

TINY = [
    "--known-rounds", "3", "--known-clients", "6", "--agnostic-clients", "6",
    "--clusters", "2", "--clients-per-round", "3", "--local-epochs", "1", "--device", "cpu",
    "--quiet",
]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.e2e
def test_attack_writes_table_csv_json_and_grid(tmp_path: Path, capsys) -> None:
    out = tmp_path / "attack"
    assert main(["attack", "--images", "2", "--attack-iterations", "3", "--attack-restarts",
                 "1", "--output-dir", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out / "attack.csv")
    assert [r["method"] for r in rows] == [*DEFAULT_ATTACK_METHODS, "random-noise"]
    assert {"method", "psnr_mean", "psnr_min", "psnr_max", "label_recovery"} <= set(rows[0])
    by = {r["method"]: r for r in rows}
    for method in DEFAULT_ATTACK_METHODS:
        row = by[method]
        assert row["images"] == "2"
        assert float(row["psnr_min"]) <= float(row["psnr_mean"]) <= float(row["psnr_max"])
        assert 0.0 <= float(row["label_recovery"]) <= 1.0
    # FedAvg shares every layer; ParFed keeps the last c = max(1, round(4 * 4 / 17)) = 1
    # of the CNN's 4 convolutions local
    assert float(by["fedavg"]["shared_layers"]) == float(by["fedavg"]["num_layers"]) == 10
    assert float(by["parfed"]["shared_layers"]) == 9
    assert float(by["fedavg"]["shared_bytes"]) > float(by["genefl"]["shared_bytes"]) > 0
    assert by["fedavg"]["shared_bytes"] == by["fedavg-dp"]["shared_bytes"]
    details = json.loads((out / "attack.json").read_text())
    genefl = next(d for d in details if d["method"] == "genefl")
    assert set(genefl["shared_layers"]) < {f"block{i}.{p}" for i in range(1, 5)
                                           for p in ("conv", "norm")} | {"fc1", "fc2"}
    # the same victims and images for every method
    victims = {tuple((i["client_id"], i["label"]) for i in d["images"]) for d in details}
    assert len(victims) == 1
    assert "| genefl " in (out / "attack.md").read_text()
    grid = matplotlib.image.imread(out / "attack_grid.png")
    assert grid.shape[0] > grid.shape[1] > 100  # 6 rows of 2 images
    config = load_toml(out / "attack_config.toml")
    assert config["images"] == 2 and config["attack_iterations"] == 3
    assert config["attack_restarts"] == 1
    assert "random-noise" in printed and "PSNR mean (dB)" in printed
    # refuses to overwrite
    assert main(["attack", "--output-dir", str(out), *TINY]) == 2
    assert "already holds attack.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "fedavg,nope"], "--methods must be 'all' or"),
        (["--images", "0"], "--images must be an integer >= 1"),
        (["--batch", "x"], "--batch must be an integer >= 1"),
        (["--batch", "9"], "--batch 9: label inference needs distinct labels"),
        (["--dp-sigma2", "-1"], "--dp-sigma2 must be a number > 0"),
        (["--attack-lr", "nan"], "--attack-lr must be a number > 0"),
        (["--attack-iterations", "2.5"], "--attack-iterations must be an integer >= 1"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
    ],
)
def test_attack_rejects_bad_values_before_work(tmp_path: Path, capsys, args, needle) -> None:
    out = tmp_path / "attack"
    assert main(["attack", "--output-dir", str(out), *TINY, *args]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_method_names_accept_a_dp_suffix() -> None:
    assert parse_attack_methods("all") == list(DEFAULT_ATTACK_METHODS)
    assert parse_attack_methods("genefl-dp, fedlg,genefl-dp") == ["genefl-dp", "fedlg"]


def test_the_attack_sees_exactly_what_each_victim_uploaded(monkeypatch) -> None:
    """The gradient handed to iDLG covers the parameters of the victim's uploaded layers
    and nothing else (GENE-FL: its learnGene)."""
    import genefl.privacy.experiment as experiment
    from genefl.cli import _merged_values, build_parser
    from genefl.compare import plan_runs
    from genefl.data.datasets import load_dataset

    args = build_parser().parse_args(["run", *TINY])
    values = _merged_values(args)
    values.pop("method", None)
    config, params = plan_runs(values, ["genefl"], 1, Path("unused"), "test")[0]
    seen: list[list[str]] = []
    real = experiment.observed_gradients

    def spy(model, victim, names, *rest, **kw):
        seen.append(list(names))
        return real(model, victim, names, *rest, **kw)

    monkeypatch.setattr(experiment, "observed_gradients", spy)
    options = AttackOptions(images=2, settings=AttackSettings(iterations=1, restarts=1))
    done: list[list[str]] = []
    [result] = run_attack(
        {"genefl": (config, params)}, ["genefl"], load_dataset("digits"), options,
        log=lambda _: None, on_method_done=lambda d: done.append([a.method for a in d]),
    )
    assert done == [["genefl"]]  # partial results are handed out after each method
    assert len(seen) == 2
    layers = result.shared_layers
    assert 0 < len(layers) < result.num_layers
    for names in seen:
        owners = {n.rsplit(".", 1)[0] for n in names}
        assert owners <= set(layers)
        assert all(not n.endswith(("running_mean", "running_var")) for n in names)
