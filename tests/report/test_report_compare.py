"""Tables and plots of ``genefl compare`` on hand-made results dicts."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from genefl.report.compare import (
    COMPARE_COLUMNS,
    GIB,
    MIB,
    agnostic_table,
    format_tables,
    known_table,
    markdown_table,
    summarise,
    text_table,
    write_compare_csv,
    write_tables,
)
from genefl.report.plots import (
    plot_agnostic_accuracy,
    plot_cumulative_upload,
    plot_known_accuracy,
    upload_unit,
    write_plots,
)

NAN = math.nan
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def result(method: str, seed: int, **kw) -> dict:
    base = {
        "method": method,
        "seed": seed,
        "exchanges": "full model",
        "initialises": "cluster model",
        "upload_bytes": 4 * GIB,
        "download_bytes": 8 * GIB,
        "known_accuracy": 0.5,
        "known_accuracy_server": 0.25,
        "init_bytes": 2.0 * MIB,
        "learngene_bytes": 1.0 * MIB,
        "agnostic_accuracy_round0": 0.3,
        "agnostic_accuracy_last10": 0.6,
        "agnostic_accuracy_round0_server": 0.1,
        "agnostic_accuracy_last10_server": 0.2,
        "model_bytes": 3 * MIB,
        "wall_seconds": 10.0,
        "known_round_accuracy": [0.1, 0.2, 0.3, 0.4],
        "agnostic_round_accuracy": [0.3, 0.5, 0.6],
        "known_round_upload_bytes": [GIB, GIB, GIB, GIB],
    }
    base.update(kw)
    return base


@pytest.fixture
def runs() -> dict[str, list[dict]]:
    return {
        "genefl": [
            result(
                "genefl", 0, exchanges="learnGene layers", initialises="learnGene",
                upload_bytes=1000, known_accuracy=0.80, init_bytes=1.0 * MIB,
                agnostic_accuracy_round0=NAN, agnostic_accuracy_last10=0.70,
                wall_seconds=4.0, known_round_upload_bytes=[400, 300, 300],
                known_round_accuracy=[0.5, NAN, 0.8],
            ),
            result(
                "genefl", 1, exchanges="learnGene layers", initialises="learnGene",
                upload_bytes=1200, known_accuracy=0.90, init_bytes=3.0 * MIB,
                agnostic_accuracy_round0=0.40, agnostic_accuracy_last10=0.80,
                wall_seconds=6.0, known_round_upload_bytes=[400, 400, 400, 0],
                known_round_accuracy=[0.6, 0.7, 0.9, 0.95],
            ),
        ],
        "fedavg": [
            result("fedavg", 0, known_accuracy=0.60),
            result("fedavg", 1, known_accuracy=0.70),
        ],
        "local": [
            result(
                "local", 0, exchanges="nothing", initialises="random", upload_bytes=0,
                download_bytes=0, known_accuracy=None, init_bytes=NAN,
                agnostic_accuracy_round0=None, agnostic_accuracy_last10=NAN,
                known_round_accuracy=[None, None], agnostic_round_accuracy=[],
                known_round_upload_bytes=[0, 0],
            ),
            result(
                "local", 1, exchanges="nothing", initialises="random", upload_bytes=0,
                download_bytes=0, known_accuracy=NAN, init_bytes=None,
                agnostic_accuracy_round0=NAN, agnostic_accuracy_last10=None,
                known_round_accuracy=[None, None], agnostic_round_accuracy=[],
                known_round_upload_bytes=[0, 0],
            ),
        ],
    }


# --------------------------------------------------------------------------- summarise


def test_summarise_means_and_population_std(runs):
    rows = summarise(runs)
    assert [r["method"] for r in rows] == ["genefl", "fedavg", "local"]
    assert all(list(r) == COMPARE_COLUMNS for r in rows)
    g = rows[0]
    assert g["repeats"] == 2
    assert g["exchanges"] == "learnGene layers" and g["initialises"] == "learnGene"
    assert g["upload_bytes"] == pytest.approx(1100.0)
    assert g["upload_bytes_std"] == pytest.approx(100.0)  # ddof=0
    assert g["known_accuracy"] == pytest.approx(0.85)
    assert g["known_accuracy_std"] == pytest.approx(0.05)
    assert g["init_bytes"] == pytest.approx(2.0 * MIB)
    assert g["init_bytes_std"] == pytest.approx(1.0 * MIB)
    # NaN in one seed is ignored: mean of the other, std 0.
    assert g["agnostic_accuracy_round0"] == pytest.approx(0.40)
    assert g["agnostic_accuracy_round0_std"] == 0.0
    assert g["agnostic_accuracy_last10"] == pytest.approx(0.75)
    assert g["agnostic_accuracy_last10_std"] == pytest.approx(0.05)
    assert g["wall_seconds"] == pytest.approx(5.0)


def test_summarise_exact_int_when_seeds_agree(runs):
    f = summarise(runs)[1]
    assert f["upload_bytes"] == 4 * GIB and type(f["upload_bytes"]) is int
    assert f["upload_bytes_std"] == 0.0
    assert type(f["download_bytes"]) is int and type(f["model_bytes"]) is int
    assert f["known_accuracy"] == pytest.approx(0.65)
    assert f["known_accuracy_std"] == pytest.approx(0.05)
    # Differing ints give the float mean.
    assert type(summarise(runs)[0]["upload_bytes"]) is float


def test_summarise_all_missing_is_nan(runs):
    loc = summarise(runs)[2]
    for key in ("known_accuracy", "init_bytes", "agnostic_accuracy_round0",
                "agnostic_accuracy_last10"):
        assert math.isnan(loc[key]) and math.isnan(loc[f"{key}_std"])
    assert loc["upload_bytes"] == 0


def test_single_repeat_std_is_zero(runs):
    row = summarise({"fedbn": [result("fedbn", 0, upload_bytes=7)]})[0]
    assert row["repeats"] == 1 and row["upload_bytes"] == 7
    assert row["upload_bytes_std"] == 0.0 and row["known_accuracy_std"] == 0.0


# --------------------------------------------------------------------------- CSV


def test_compare_csv_round_trips(runs, tmp_path):
    rows = summarise(runs)
    path = write_compare_csv(rows, tmp_path / "compare.csv")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COMPARE_COLUMNS
        read = list(reader)
    assert [r["method"] for r in read] == ["genefl", "fedavg", "local"]
    g, f, loc = read
    assert g["agnostic_accuracy_round0"] == "0.4"
    assert float(g["known_accuracy"]) == rows[0]["known_accuracy"]
    assert float(g["upload_bytes_std"]) == rows[0]["upload_bytes_std"]
    assert f["upload_bytes"] == str(4 * GIB)  # exact int, no ".0"
    assert int(f["repeats"]) == 2
    assert loc["known_accuracy"] == "" and loc["init_bytes_std"] == ""
    assert loc["upload_bytes"] == "0"


# --------------------------------------------------------------------------- tables


def test_known_table_cells(runs):
    headers, cells = known_table(summarise(runs))
    assert headers == ["Method", "Exchanged", "Upload (GB)", "Accuracy (%)", "Server view (%)"]
    g, f, loc = cells
    assert f[4] == "25.00 ± 0.00"  # the server view has its own column
    assert g[:2] == ["genefl", "learnGene layers"]
    assert g[2] == f"{1100 / GIB:.4f} ± {100 / GIB:.4f}"
    assert g[3] == "85.00 ± 5.00"
    assert f[2] == "4.0000 ± 0.0000" and f[3] == "65.00 ± 5.00"
    assert loc[2] == "0.0000 ± 0.0000" and loc[3] == "n/a"


def test_agnostic_table_cells(runs):
    headers, cells = agnostic_table(summarise(runs))
    assert headers == [
        "Method", "Initialised from", "Init (MB)", "Acc. round 0 (%)", "Server view (%)",
        "Acc. last 10 (%)", "Server view (%)",
    ]
    g, f, loc = cells
    assert [g[i] for i in (0, 1, 2, 3, 5)] == [
        "genefl", "learnGene", "2.0000 ± 1.0000", "40.00 ± 0.00", "75.00 ± 5.00"]
    assert f == ["fedavg", "cluster model", "2.0000 ± 0.0000", "30.00 ± 0.00", "10.00 ± 0.00",
                 "60.00 ± 0.00", "20.00 ± 0.00"]
    assert [loc[i] for i in (2, 3, 5)] == ["n/a", "n/a", "n/a"]


def test_single_repeat_shows_mean_only():
    rows = summarise({"fedlp": [result("fedlp", 3, known_accuracy=0.1234)]})
    assert known_table(rows)[1][0][2:] == ["4.0000", "12.34", "25.00"]
    assert agnostic_table(rows)[1][0][2:] == ["2.0000", "30.00", "10.00", "60.00", "20.00"]


def test_markdown_and_text_tables(runs):
    headers, cells = known_table(summarise(runs))
    md = markdown_table(headers, cells).splitlines()
    assert md[0] == "| Method | Exchanged | Upload (GB) | Accuracy (%) | Server view (%) |"
    assert md[1] == "| --- | --- | --- | --- | --- |"
    assert md[3] == "| fedavg | full model | 4.0000 ± 0.0000 | 65.00 ± 5.00 | 25.00 ± 0.00 |"
    assert len(md) == 2 + 3
    text = text_table(headers, cells).splitlines()
    assert len(text) == 2 + 3 and len({len(line) for line in text[:2]}) == 1
    # Columns line up: every "|" sits at the same offsets as in the header.
    seps = [i for i, ch in enumerate(text[0]) if ch == "|"]
    for line in text[2:]:
        assert [i for i, ch in enumerate(line) if ch == "|"] == seps


def test_write_tables_and_format(runs, tmp_path):
    rows = summarise(runs)
    paths = write_tables(rows, tmp_path / "out")
    assert [p.name for p in paths] == ["known_table.md", "agnostic_table.md"]
    known, agnostic = (p.read_text(encoding="utf-8") for p in paths)
    assert "Tables I/II" in known.splitlines()[0]
    assert "Tables III/IV" in agnostic.splitlines()[0]
    for text in (known, agnostic):
        assert all(f"| {m} |" in text for m in runs)
        assert "GB = 2^30 bytes" in text and "MB = 2^20 bytes" in text
        assert "over 2 seeds" in text
    assert "| local | random | n/a | n/a |" in agnostic
    printed = format_tables(rows)
    assert "Tables I/II" in printed and "Tables III/IV" in printed
    assert printed.count("genefl") == 2 and "85.00 ± 5.00" in printed


# --------------------------------------------------------------------------- plots


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_write_plots(runs, tmp_path):
    paths = write_plots(runs, tmp_path / "plots")
    assert [p.name for p in paths] == [
        "known_accuracy.png", "cumulative_upload.png", "agnostic_accuracy.png",
    ]
    for path in paths:
        assert_png(path)


def test_plots_with_nan_rounds_and_single_seed(tmp_path):
    one = {
        "genefl": [result("genefl", 0, known_round_accuracy=[0.1, NAN, None, 0.4],
                          agnostic_round_accuracy=[NAN, 0.5])],
        "fedavg": [result("fedavg", 0, known_round_accuracy=[NAN, NAN])],
    }
    assert_png(plot_known_accuracy(one, tmp_path / "k.png"))
    assert_png(plot_agnostic_accuracy(one, tmp_path / "a.png"))
    assert_png(plot_cumulative_upload(one, tmp_path / "u.png"))


def test_upload_unit_switches_at_one_gib():
    assert upload_unit(GIB - 1) == (MIB, "Cumulative upload (MB, 2^20 bytes)")
    assert upload_unit(GIB) == (GIB, "Cumulative upload (GB, 2^30 bytes)")
