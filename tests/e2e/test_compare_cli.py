"""`genefl compare`: every method side by side, tables, CSV and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from genefl.algorithms.registry import algorithm_names
from genefl.cli import build_parser, main
from genefl.config import load_toml
from genefl.presets import PRESETS

TINY = [
    "--known-rounds", "2", "--agnostic-rounds", "2", "--local-epochs", "1",
    "--known-clients", "6", "--agnostic-clients", "6", "--clusters", "2",
    "--clients-per-round", "3", "--device", "cpu", "--quiet",
]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.e2e
def test_tiny_compare_of_all_methods_writes_tables_csv_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "all", "--repeats", "2", "--output-dir", str(out),
                 *TINY]) == 0
    printed = capsys.readouterr().out
    methods = algorithm_names()
    assert len(methods) == 9
    rows = _rows(out / "compare.csv")
    assert [r["method"] for r in rows] == methods
    assert {"method", "upload_bytes", "known_accuracy", "init_bytes",
            "agnostic_accuracy_round0", "agnostic_accuracy_last10"} <= set(rows[0])
    by = {r["method"]: r for r in rows}
    for row in rows:
        assert row["repeats"] == "2"
        assert 0.0 <= float(row["known_accuracy"]) <= 1.0  # a fraction, not percent
    model_bytes = int(by["fedavg"]["model_bytes"])
    assert int(by["fedavg"]["upload_bytes"]) == 2 * 3 * model_bytes  # rounds x clients x bytes
    assert int(by["local"]["upload_bytes"]) == 0
    for method in methods:
        if method not in ("fedavg", "local"):
            assert 0 < float(by[method]["upload_bytes"]) < 2 * 3 * model_bytes, method
    # per-seed results exist and differ by seed
    seeds = [json.loads((out / "genefl" / f"seed{s}" / "results.json").read_text())
             for s in (0, 1)]
    assert [s["seed"] for s in seeds] == [0, 1]
    for name in ("known_table.md", "agnostic_table.md"):
        text = (out / name).read_text()
        assert all(f"| {m} " in text for m in methods), name
        assert "±" in text
    assert "Known phase" in printed and "Agnostic phase" in printed
    for name in ("known_accuracy.png", "cumulative_upload.png", "agnostic_accuracy.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300
    config = load_toml(out / "compare_config.toml")
    assert config["repeats"] == 2 and config["methods"] == ",".join(methods)

    # a second call reuses every finished run and rewrites identical tables
    before = (out / "compare.csv").read_text()
    assert main(["compare", "--methods", "all", "--repeats", "2", "--output-dir", str(out),
                 *TINY]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing finished run") == 18
    assert (out / "compare.csv").read_text().splitlines()[1:] == before.splitlines()[1:]


def test_compare_refuses_a_run_folder_of_another_configuration(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--methods", "local", "--output-dir", str(out), *TINY]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--lr", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "--overwrite" in err
    assert main([*args, "--lr", "0.05", "--overwrite"]) == 0


def test_finished_run_without_options_added_later_is_reused(tmp_path: Path) -> None:
    """A run recorded before --image-size/--cache-dir existed (both unset) still matches."""
    from genefl.callbacks.writers import json_safe
    from genefl.compare import _finished
    from genefl.config import resolve, resolved_dict
    from genefl.errors import ConfigError

    resolved = resolved_dict(*resolve({}, {}))
    stored = {k: v for k, v in resolved.items() if k not in ("image_size", "cache_dir")}
    (tmp_path / "results.json").write_text(json.dumps({"run": {"config": json_safe(stored)}}))
    assert _finished(tmp_path, resolved) is not None
    (tmp_path / "results.json").write_text(
        json.dumps({"run": {"config": json_safe({**stored, "lr": 0.5})}}))
    with pytest.raises(ConfigError, match="different configuration"):
        _finished(tmp_path, resolved)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--methods", "fedavg,nope"], "--methods must be 'all' or a comma-separated list"),
        (["--methods", ","], "--methods"),
        (["--repeats", "0"], "--repeats must be an integer >= 1"),
        (["--repeats", "two"], "--repeats must be an integer >= 1"),
        (["--fedlp-keep-prob", "0"], "--fedlp-keep-prob must be in (0, 1]"),
        (["--fedlps-prune-ratio", "1"], "--fedlps-prune-ratio must be in [0, 1)"),
        (["--train-fraction", "1.5"], "--train-fraction must be in (0, 1]"),
        (["--methods", "fedavg,parfed", "--partial-convs", "9"],
         "--partial-convs must be at most the model's 4 main-path convolutions"),
    ],
)
def test_compare_rejects_bad_values_before_work(tmp_path: Path, capsys, args, needle) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--output-dir", str(out), *TINY, *args]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_preset_is_overridden_by_config_file_and_options(tmp_path: Path) -> None:
    from genefl.cli import _merged_values

    config = tmp_path / "c.toml"
    config.write_text('known_rounds = 7\nlr = 0.5\n')
    args = build_parser().parse_args(
        ["run", "--preset", "ci", "--config", str(config), "--lr", "0.2"]
    )
    values = _merged_values(args)
    assert values["dataset"] == PRESETS["ci"]["dataset"] == "fashion-mnist"
    assert values["local_epochs"] == PRESETS["ci"]["local_epochs"]
    assert values["known_rounds"] == 7  # file beats preset
    assert values["lr"] == "0.2"  # option beats file (coerced later)


def test_paper_preset_is_the_papers_protocol() -> None:
    """SPEC §1: 50 + 50 clients, 10 per round, 100 + 50 rounds, 10 epochs, batch 64,
    SGD 0.01 / 0.9, ResNet-18, K = 4, 3 repeats."""
    paper = PRESETS["paper"]
    assert (paper["known_clients"], paper["agnostic_clients"], paper["clients_per_round"]) == (
        50, 50, 10)
    assert (paper["known_rounds"], paper["agnostic_rounds"], paper["local_epochs"]) == (
        100, 50, 10)
    assert (paper["batch_size"], paper["lr"], paper["momentum"]) == (64, 0.01, 0.9)
    assert paper["model"] == "resnet18" and paper["clusters"] == 4 and paper["repeats"] == 3
