"""``genefl learngene``: the learnGene's composition per gamma, from hand-built records.

The toy model: ``A`` conv (100 parameters, 400 bytes), ``B`` norm (4 parameters + 4
running statistics, 32 bytes), ``C`` linear head (20 parameters, 80 bytes); 512 bytes.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from genefl.cli import main
from genefl.report.learngene import (
    LayerSize,
    UploadRecord,
    composition,
    final_learngenes,
    format_markdown,
    gammas_by_round,
    layer_sizes,
    learngene_share,
    load_run,
    smallest_layers,
    uploads_from_clients,
)

TABLE = [
    {"name": "A", "kind": "conv", "params": 100, "bytes": 400},
    {"name": "B", "kind": "norm", "params": 4, "bytes": 32},
    {"name": "C", "kind": "linear", "params": 20, "bytes": 80},
]
LAYERS = layer_sizes(TABLE)
SIZES = {"A": 400, "B": 32, "C": 80}


def _client(rnd: int, phase: str, cluster: int, layers: tuple[str, ...], **extra: object):
    return {"round": rnd, "phase": phase, "client_id": 7, "cluster": cluster,
            "upload_layers": list(layers), "upload_bytes": sum(SIZES[n] for n in layers),
            "dropped": False, "rejected": "", **extra}


CLIENTS = [
    _client(0, "known", 0, ("A", "B", "C")),
    _client(0, "known", 1, ("A", "B", "C")),
    _client(0, "known", 2, ("A", "C")),
    _client(1, "known", 0, ("B", "C")),
    _client(1, "known", 1, ("A", "B")),
    _client(1, "known", 2, ("A", "B")),
    _client(1, "known", 2, ("B", "C")),
    _client(1, "known", 2, ("B",)),
    _client(1, "known", 0, (), dropped=True),
    _client(1, "known", 0, ("A",), rejected="too far"),
    _client(2, "agnostic", 1, ("A",)),
]
ROUNDS = [{"round": "0", "phase": "known", "gamma": "3"},
          {"round": "1", "phase": "known", "gamma": "2"},
          {"round": "2", "phase": "agnostic", "gamma": "2"}]
PACKAGES = {0: ["B"], 1: ["A", "B"], 2: ["B"]}


def test_records_are_read_as_written() -> None:
    uploads = uploads_from_clients(CLIENTS)
    assert len(uploads) == 9  # the dropped and the rejected upload are left out
    assert uploads[3] == UploadRecord(1, "known", 0, ("B", "C"), 112)
    assert gammas_by_round(ROUNDS + [{"round": "3", "gamma": ""}]) == {
        0: 3, 1: 2, 2: 2, 3: None}


def test_composition_per_phase_and_gamma() -> None:
    rows = composition(uploads_from_clients(CLIENTS), gammas_by_round(ROUNDS), LAYERS)
    assert [(r.phase, r.gamma, r.rounds, r.uploads) for r in rows] == [
        ("known", 3, (0,), 3), ("known", 2, (1,), 5), ("agnostic", 2, (2,), 1)]
    first, second, _ = rows
    # gamma 3: uploads of 512, 512 and 480 bytes
    assert first.mean_bytes == pytest.approx((512 + 512 + 480) / 3)
    assert first.share == pytest.approx(1504 / 3 / 512)
    assert first.smallest_share == 1.0  # all three layers
    # gamma 2: BC 112, AB 432, AB 432, BC 112, B 32 -> mean 224 bytes
    assert second.picks == {"A": 2, "B": 5, "C": 2}
    assert second.mean_bytes == pytest.approx(224.0)
    assert second.share == pytest.approx(224 / 512)
    # Eq. 9 at equal cosines keeps the two smallest layers, B (4) and C (20): 112 bytes
    assert second.smallest_share == pytest.approx(112 / 512)
    assert second.kinds["conv"] == pytest.approx((2 / 5, 2 * 400 / 5 / 512))
    assert second.kinds["norm"] == pytest.approx((1.0, 32 / 512))
    assert second.kinds["linear"] == pytest.approx((2 / 5, 2 * 80 / 5 / 512))


def test_smallest_layers_break_ties_by_model_order() -> None:
    tied = layer_sizes(TABLE + [{"name": "D", "kind": "norm", "params": 4, "bytes": 32}])
    assert smallest_layers(tied, 1) == ["B"]
    assert smallest_layers(tied, 3) == ["B", "C", "D"]


def test_final_learngene_is_the_majority_of_the_last_known_round() -> None:
    finals = final_learngenes(uploads_from_clients(CLIENTS), LAYERS, "C", PACKAGES)
    assert [(f.cluster, f.layers, f.nbytes) for f in finals] == [
        (0, ("B", "C"), 112),
        (1, ("A", "B"), 432),  # the agnostic upload of A alone does not count
        (2, ("B",), 32),  # AB, BC, B: only B is in at least half of the three
    ]
    assert [f.package_bytes for f in finals] == [32, 432, 32]
    assert learngene_share(finals, 512) == pytest.approx((32 + 432 + 32) / 3 / 512)
    assert learngene_share([], 512) is None


def test_markdown_states_the_share_and_the_paper() -> None:
    uploads = uploads_from_clients(CLIENTS)
    text = format_markdown(
        "toy", LAYERS, composition(uploads, gammas_by_round(ROUNDS), LAYERS),
        final_learngenes(uploads, LAYERS, "C", PACKAGES), floor=1,
    )
    assert "Model: 3 layers (conv 1, norm 1, linear 1), 124 parameters, 512 bytes" in text
    assert f"({100 * 496 / 3 / 512:.2f} %) per cluster" in text
    assert "9.04 of 42.66 MB (21.2 %)" in text
    assert "gamma = 1, the 1 smallest layers (norm 1) are 32 bytes (6.25 %)" in text
    assert "| known | 2 | 1 | 5 | 43.75 % | 21.88 % |" in text
    assert "| 1 | B | norm | 4 | 32 | 6.25 % | 1 |" in text  # size rank 1


def _write_run(folder: Path, results: dict) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    with (folder / "rounds.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["round", "phase", "gamma"])
        writer.writeheader()
        writer.writerows(ROUNDS)
    (folder / "clients.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CLIENTS))
    return folder


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _write_run(tmp_path / "run", {
        "method": "genefl", "dataset": "toy", "seed": 0,
        "learngene_layers": {str(k): v for k, v in PACKAGES.items()},
        "algorithm": {"classifier_head": "C"},
        "run": {"config": {"method": "genefl", "model": "toy", "gamma_floor": 0.5},
                "layer_table": TABLE},
    })
    assert main(["learngene", str(run)]) == 0
    assert "# learnGene composition: genefl on toy, toy, seed 0" in capsys.readouterr().out
    with (run / "learngene.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["phase"], r["gamma"], r["share"]) for r in rows] == [
        ("known", "3", f"{1504 / 3 / 512:.6f}"), ("known", "2", f"{224 / 512:.6f}"),
        ("agnostic", "2", f"{400 / 512:.6f}")]
    with (run / "learngene_layers.csv").open() as fh:
        layers = {r["layer"]: r for r in csv.DictReader(fh)}
    assert layers["B"]["known_uploads"] == "7" and layers["B"]["final_clusters"] == "3"
    assert layers["A"]["known_uploads"] == "5" and layers["A"]["final_clusters"] == "1"
    assert (run / "learngene.md").read_text().startswith("# learnGene composition")
    assert load_run(run).floor == math.ceil(0.5 * 3)


def test_run_without_a_layer_table_rebuilds_the_model(tmp_path: Path) -> None:
    run = _write_run(tmp_path / "old", {
        "method": "fedlg", "dataset": "digits", "seed": 0, "learngene_layers": {},
        "run": {"config": {"method": "fedlg", "dataset": "digits", "model": "cnn"}},
    })
    rec = load_run(run)
    assert [la.kind for la in rec.layers] == ["conv", "norm"] * 4 + ["linear", "linear"]
    assert rec.layers[1] == LayerSize("block1.norm", "norm", 32, 4 * 64)
    assert rec.head == "fc2" and rec.floor is None


def test_missing_files_are_named(tmp_path: Path) -> None:
    assert main(["learngene", str(tmp_path)]) == 2
