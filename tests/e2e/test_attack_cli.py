"""`genefl attack`: the privacy table, CSV, JSON and image grid by round and attack
(issues 6 and 13)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from genefl.cli import build_parser, main
from genefl.config import load_toml
from genefl.privacy.experiment import run_attack
from genefl.privacy.options import DEFAULT_ATTACK_METHODS, AttackOptions

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
    assert main(["attack", "--images", "2", "--attack", "both", "--attack-rounds", "1,last",
                 "--idlg-iterations", "3", "--idlg-restarts", "1", "--ig-iterations", "4",
                 "--ig-restarts", "1", "--output-dir", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out / "attack.csv")
    methods = [*DEFAULT_ATTACK_METHODS, "random-noise"]
    # a row per round x method x attack, each round closed by its noise control
    expected = [
        (rnd, m, a) for rnd in ("1", "3") for m in methods
        for a in (("none",) if m == "random-noise" else ("idlg", "ig"))
    ]
    assert [(r["round"], r["method"], r["attack"]) for r in rows] == expected
    assert {"psnr_mean", "ssim_mean", "ssim_min", "ssim_max", "recognisable",
            "recognisable_psnr", "label_recovery"} <= set(rows[0])
    by = {(r["round"], r["method"], r["attack"]): r for r in rows}
    for rnd, method, attack in expected:
        row = by[(rnd, method, attack)]
        assert row["images"] == "2"
        assert float(row["psnr_min"]) <= float(row["psnr_mean"]) <= float(row["psnr_max"])
        assert -1.0 <= float(row["ssim_min"]) <= float(row["ssim_mean"]) <= 1.0
        assert float(row["recognisable"]) in (0.0, 0.5, 1.0)
        assert row["recognisable_psnr"] == "15.0"
        if method != "random-noise":
            assert 0.0 <= float(row["label_recovery"]) <= 1.0
    # FedAvg shares every layer; ParFed keeps the last c = max(1, round(4 * 4 / 17)) = 1
    # of the CNN's 4 convolutions local
    last = {m: by[("3", m, "ig")] for m in DEFAULT_ATTACK_METHODS}
    assert float(last["fedavg"]["shared_layers"]) == float(last["fedavg"]["num_layers"]) == 10
    assert float(last["parfed"]["shared_layers"]) == 9
    assert float(last["fedavg"]["shared_bytes"]) > float(last["genefl"]["shared_bytes"]) > 0
    assert last["fedavg"]["shared_bytes"] == last["fedavg-dp"]["shared_bytes"]
    details = json.loads((out / "attack.json").read_text())
    assert {(d["round"], d["attack"]) for d in details} == {(1, "idlg"), (1, "ig"),
                                                              (3, "idlg"), (3, "ig")}
    genefl = next(d for d in details if d["method"] == "genefl" and d["round"] == 3)
    assert set(genefl["shared_layers"]) < {f"block{i}.{p}" for i in range(1, 5)
                                           for p in ("conv", "norm")} | {"fc1", "fc2"}
    assert all("ssim" in i and "psnr_db" in i for d in details for i in d["images"])
    # the same victims and images for every method and attack of a round
    for rnd in (1, 3):
        victims = {tuple((i["client_id"], i["label"]) for i in d["images"])
                   for d in details if d["round"] == rnd}
        assert len(victims) == 1
    table = (out / "attack.md").read_text()
    assert "| 3 | genefl | ig |" in table and "SSIM mean" in table and "> 15 dB" in table
    grid = matplotlib.image.imread(out / "attack_grid.png")
    assert grid.shape[0] > grid.shape[1] > 100  # 11 rows, 2 rounds x 2 images
    config = load_toml(out / "attack_config.toml")
    assert config["images"] == 2 and config["idlg_iterations"] == 3
    assert config["attack_rounds"] == "1,last" and config["ig_tv"] == 1e-2
    assert "random-noise" in printed and "SSIM mean" in printed
    # the written configuration is usable as --config
    again = tmp_path / "again"
    assert main(["attack", "--config", str(out / "attack_config.toml"), "--ig-iterations",
                 "1", "--idlg-iterations", "1", "--methods", "fedlg", "--attack-rounds", "1",
                 "--images", "1", "--output-dir", str(again), "--quiet"]) == 0
    assert [r["method"] for r in _rows(again / "attack.csv")] == ["fedlg"] * 2 + ["random-noise"]
    # refuses to overwrite
    assert main(["attack", "--output-dir", str(out), *TINY]) == 2
    assert "already holds attack.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "fedavg,nope"], "--methods must be 'all', 'every' or"),
        (["--images", "0"], "--images must be >= 1"),
        (["--batch", "x"], "--batch must be int"),
        (["--batch", "9"], "--batch 9: label inference needs distinct labels"),
        (["--dp-sigma2", "-1"], "--dp-sigma2 must be > 0"),
        (["--ig-lr", "nan"], "--ig-lr must be > 0 and finite"),
        (["--idlg-iterations", "2.5"], "--idlg-iterations must be int"),
        (["--attack-rounds", "1,4"], "round 4 is beyond --known-rounds (3)"),
        (["--attack-rounds", "first"], "--attack-rounds must be"),
        (["--ig-tv", "-1"], "--ig-tv must be >= 0"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
    ],
)
def test_attack_rejects_bad_values_before_work(tmp_path: Path, capsys, args, needle) -> None:
    out = tmp_path / "attack"
    assert main(["attack", "--output-dir", str(out), *TINY, *args]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_attack_options_come_from_a_config_file(tmp_path: Path) -> None:
    from genefl.cli import _merged_values
    from genefl.options import build, option_fields

    path = tmp_path / "a.toml"
    path.write_text('attack = "ig"\nig-tv = 0.25\nattack_rounds = "2"\nknown_rounds = 4\n')
    args = build_parser().parse_args(["attack", "--config", str(path), "--images", "3"])
    values = _merged_values(args)
    names = {f.name for f in option_fields(AttackOptions)}
    options = build(AttackOptions, {k: v for k, v in values.items() if k in names}, "t")
    assert (options.attack, options.ig_tv, options.attack_rounds, options.images) == (
        "ig", 0.25, "2", 3)
    help_text = build_parser()._subparsers._group_actions[0].choices["attack"].format_help()
    for flag in ("--attack {idlg,ig,both}", "--attack-rounds", "--ig-tv", "--ig-iterations",
                 "--recognisable-psnr", "--idlg-restarts"):
        assert flag in help_text


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
    options = AttackOptions(methods="genefl", attack="idlg", images=2, idlg_iterations=1,
                            idlg_restarts=1)
    done: list[list[str]] = []
    [result] = run_attack(
        {"genefl": (config, params)}, ["genefl"], load_dataset("digits"), options, [3],
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
