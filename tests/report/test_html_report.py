"""``genefl report``: directory kinds, the error, the page's content, and the page of a real
comparison rendered by a headless Chromium (every table and image present, every image
decoded).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from PIL import Image

from genefl.cli import main
from genefl.report import html
from genefl.report.page import (
    ReportError,
    build_report,
    detect_kind,
    drawn_figures,
    find_runs,
    group_runs,
    load_run,
    round_series,
)

TINY = [
    "--known-rounds", "2", "--agnostic-rounds", "2", "--local-epochs", "1",
    "--known-clients", "6", "--agnostic-clients", "6", "--clusters", "2",
    "--clients-per-round", "3", "--device", "cpu", "--quiet",
]
IMG_SRC = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
MACHINE = {"cpu": "Test CPU 9000", "cpu_count": 64, "gpu": "Test GPU", "memory_gib": 512.0,
           "os": "TestOS", "python": "3.99", "torch": "9.9", "numpy": "9.9",
           "genefl": "0.1.0", "git_commit": "abc123def456"}


def png_bytes(colour: str = "red") -> bytes:
    fig = Figure(figsize=(1, 1), dpi=20)
    fig.add_subplot().plot([0, 1], [0, 1], color=colour)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def make_run(folder: Path, method: str = "genefl", seed: int = 0, evaluated: bool = False,
             machine: dict | None = None) -> Path:
    """A finished run directory as `genefl run` writes it (2 + 2 rounds)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(f'method = "{method}"\nseed = {seed}\n')
    rounds = [
        {"round": r, "phase": phase, "phase_round": pr, "accuracy": 0.5 + 0.1 * r,
         "upload_bytes": 1000, "eval_accuracy": "", "eval_accuracy_server": ""}
        for r, (phase, pr) in enumerate([("known", 0), ("known", 1), ("agnostic", 0),
                                          ("agnostic", 1)])
    ]
    write_csv(folder / "rounds.csv", rounds)
    (folder / "clients.jsonl").write_text("")
    results = {
        "method": method, "seed": seed, "known_accuracy": 0.61, "upload_bytes": 2000,
        "known_round_accuracy": [0.5, 0.6], "known_round_upload_bytes": [1000, 1000],
        "agnostic_round_accuracy": [0.7, 0.8], "device": "cpu",
        "run": {"machine": machine} if machine else {},
    }
    if evaluated:
        results |= {"known_eval_rounds": [0, 1], "known_eval_accuracy": [0.4, 0.5],
                    "known_eval_accuracy_server": [0.3, 0.45]}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(("files", "kind"), [
    (["sweep.toml"], "sweep"),
    (["runs.csv", "summary.csv"], "sweep"),
    (["compare.csv", "known_table.md"], "compare"),
    (["attack.csv"], "attack"),
    (["attack.json"], "attack"),
    (["results.json"], "run"),
    (["config.toml", "rounds.csv"], "run"),
])
def test_detect_kind_by_files(tmp_path: Path, files: list[str], kind: str) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    assert detect_kind(tmp_path) == kind


@pytest.mark.parametrize("files", [[], ["config.toml"], ["rounds.csv"], ["notes.md"]])
def test_a_directory_of_no_kind_is_refused(tmp_path: Path, files: list[str]) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    with pytest.raises(ReportError, match="not a run, compare, sweep or attack directory"):
        detect_kind(tmp_path)


@pytest.mark.parametrize("make", ["empty", "missing", "file"])
def test_report_cli_error_is_one_line_naming_the_path_and_the_fix(
    tmp_path: Path, capsys, make: str
) -> None:
    target = tmp_path / "where"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(target) in err and "--output-dir" in err
    assert not (tmp_path / "where" / "report.html").exists()


# --------------------------------------------------------------------------- blocks


def test_markdown_pipe_tables_become_html_tables_with_escaped_cells() -> None:
    text = ("## Title with `code`\n\nSome <b>raw</b> and `<i>`, **bold** <u>.\n\n"
            "| a<br> | b \\| c |\n| --- | ---: |\n| <script>x</script> | 1.23456789 |\n| short |\n")
    out = html.markdown(text)
    assert out.count("<table>") == 1
    assert "<th>a&lt;br&gt;</th><th>b | c</th>" in out
    assert "&lt;script&gt;x&lt;/script&gt;" in out and "<script>" not in out
    assert "<p>Some &lt;b&gt;raw&lt;/b&gt; and <code>&lt;i&gt;</code>, <b>bold</b> &lt;u&gt;.</p>" \
        in out
    assert '<td class="num" title="1.23456789">1.23457</td>' in out
    assert "<tr><td>short</td><td></td></tr>" in out  # a short row is padded
    assert "<h3>Title with <code>code</code></h3>" in out


@pytest.mark.parametrize(("text", "shown"), [
    ("0.00", "0.00"), ("0.23853211009174313", "0.238532"), ("1217136", "1217136"),
    ("131904.0", "131904"), ("1217136.25", "1217136"), ("1.23456789e-05", "1.23457e-05"),
    ("12.3 ± 0.4", "12.3 ± 0.4"),
    ("n/a", "n/a"), ("genefl", "genefl"),
])
def test_only_numbers_with_more_than_six_digits_are_shortened(text: str, shown: str) -> None:
    assert html.short_number(text) == shown


def test_csv_with_ragged_rows_and_markup_is_a_table() -> None:
    out = html.csv_table('x,y\n1,"<img src=x onerror=alert(1)>"\n2,3,extra\n')
    assert out.count("<tr>") == 3  # header + 2 rows
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "<td>extra</td>" in out


def test_long_tables_are_folded_but_keep_every_row() -> None:
    out = html.table(["n"], [[str(i)] for i in range(html.FOLD_ROWS + 5)])
    assert "<details>" in out and "5 more rows" in out
    assert all(f">{i}</td>" in out for i in range(html.FOLD_ROWS + 5))


def test_round_series_rebuilds_the_per_round_lists_and_the_evaluations() -> None:
    rows = [
        {"phase": "known", "phase_round": "0", "accuracy": "0.5", "upload_bytes": "10",
         "eval_accuracy": "", "eval_accuracy_server": ""},
        {"phase": "known", "phase_round": "1", "accuracy": "", "upload_bytes": "20",
         "eval_accuracy": "0.4", "eval_accuracy_server": "0.3"},
        {"phase": "agnostic", "phase_round": "0", "accuracy": "0.7", "upload_bytes": "5"},
    ]
    series = round_series(rows)
    assert series["known_round_accuracy"] == [0.5, None]
    assert series["known_round_upload_bytes"] == [10.0, 20.0]
    assert series["agnostic_round_accuracy"] == [0.7]
    assert series["known_eval_rounds"] == [1]  # the phase round, as results.json has it
    assert series["known_eval_accuracy"] == [0.4]
    assert series["known_eval_accuracy_server"] == [0.3]
    assert "agnostic_eval_rounds" not in series


def _width(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).size[0]


def test_scorings_of_every_client_are_drawn_in_both_views_else_the_participants() -> None:
    plain = {"known_round_accuracy": [0.5, 0.6], "agnostic_round_accuracy": [0.7]}
    scored = {**plain, "known_eval_rounds": [0, 1], "known_eval_accuracy": [0.4, 0.5],
              "known_eval_accuracy_server": [0.3, None]}
    drawn = dict(drawn_figures({"genefl": [scored]}, set()))
    assert list(drawn) == ["known_accuracy.png", "agnostic_accuracy.png"]  # no upload data
    single = dict(drawn_figures({"genefl": [plain]}, set()))
    # the known figure has two panels (personalised, server) when scorings are recorded
    assert _width(drawn["known_accuracy.png"]) > 1.4 * _width(single["known_accuracy.png"])
    assert drawn["agnostic_accuracy.png"] == single["agnostic_accuracy.png"]
    only_scored = {"known_eval_rounds": [0], "known_eval_accuracy": [0.4]}
    assert list(dict(drawn_figures({"m": [only_scored]}, set()))) == ["known_accuracy.png"]
    assert drawn_figures({"genefl": [scored]}, {"known_accuracy.png",
                                               "agnostic_accuracy.png"}) == []


# --------------------------------------------------------------------------- pages


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in IMG_SRC.findall(page)]


def test_run_page_draws_its_curves_and_shows_the_recorded_machine(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", evaluated=True, machine=MACHINE)
    page = build_report(run)
    for name in ("known_accuracy.png", "cumulative_upload.png", "agnostic_accuracy.png"):
        assert f"{name} (drawn by the report from the runs)" in page, name
    images = _images(page)
    assert len(images) == 3
    for data in images:
        Image.open(io.BytesIO(data)).load()
    assert "recorded by 1 run" in page and "Test CPU 9000" in page and "abc123def456" in page
    assert "machine of the report" not in page
    assert "<h2>Results</h2>" in page and "known_accuracy" in page
    assert "rounds.csv" in page and 'method = &quot;genefl&quot;' in page


def test_an_unfinished_run_is_drawn_from_rounds_csv(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "results.json").unlink()
    page = build_report(run)
    assert "known_accuracy.png (drawn by the report from the runs)" in page
    assert "machine of the report (the directory recorded none)" in page


def test_sweep_page_renders_its_tables_and_draws_one_line_per_cell(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for cell in ("lr=0.1", "lr=0.01"):
        for seed in (0, 1):
            make_run(sweep / "cells" / cell / f"seed{seed}", seed=seed, machine=MACHINE)
    (sweep / "sweep.toml").write_text('[sweep]\nlr = [0.1, 0.01]\n')
    write_csv(sweep / "runs.csv", [
        {"cell": "lr=0.1", "lr": 0.1, "seed": 0, "known_accuracy": 0.6, "new_metric": 1},
        {"cell": "lr=0.01", "lr": 0.01, "seed": 0, "known_accuracy": 0.5},
    ])
    write_csv(sweep / "summary.csv", [{"cell": "lr=0.1", "known_accuracy": 0.6}])
    (sweep / "summary.md").write_text(
        "| cell | known accuracy (%) |\n| --- | --- |\n| lr=0.1 | 60.00 ± 1.00 |\n"
    )
    page = build_report(sweep)
    assert detect_kind(sweep) == "sweep"
    assert page.count("<table>") == 3 + 1 + 1 + 1  # summary.md/.csv, runs.csv; runs, machine, files
    assert "<td>60.00 ± 1.00</td>" in page.replace(' class="num"', "")
    assert "<th>new_metric</th>" in page
    assert "cells/lr=0.1/seed1" in page and "4 run directories" in page
    assert "lr = [0.1, 0.01]" in page
    assert "recorded by 4 runs" in page
    grouped = group_runs(sweep, [(run, load_run(run)) for run in find_runs(sweep)])
    assert {cell: [r["seed"] for r in seeds] for cell, seeds in grouped.items()} == {
        "lr=0.01": [0, 1], "lr=0.1": [0, 1],
    }
    assert len(_images(page)) == 3  # known, upload, agnostic curves, one line per cell


def test_attack_page_embeds_the_grid_and_names_the_report_machine(tmp_path: Path) -> None:
    out = tmp_path / "attack"
    out.mkdir()
    write_csv(out / "attack.csv", [{"method": "fedavg", "psnr_mean": 30.5},
                                   {"method": "random-noise", "psnr_mean": 5.1}])
    (out / "attack.md").write_text(
        "# iDLG\n\n| method | PSNR |\n| --- | --- |\n| fedavg | 30.5 |\n"
    )
    (out / "attack.json").write_text(json.dumps([{"method": "fedavg", "images": []}]))
    grid = png_bytes()
    (out / "attack_grid.png").write_bytes(grid)
    (out / "attack_config.toml").write_text('methods = "fedavg"\n')
    page = build_report(out)
    assert _images(page) == [grid]
    details = "<summary>attack.json</summary><pre>[\n {\n  &quot;method&quot;: &quot;fedavg&quot;"
    assert details in page
    assert "random-noise" in page
    assert "machine of the report (the directory recorded none)" in page


# --------------------------------------------------------------------------- browser


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: appended to a copy of the page: writes what the browser made of it into the DOM
PROBE = """<script>
window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")].map(t => ({
    headers: [...t.querySelectorAll("thead th")].map(th => th.textContent),
    rows: [...t.querySelectorAll("tbody tr")].map(tr =>
      [...tr.querySelectorAll("td")].map(td => td.textContent)),
  }));
  const images = [...document.images].map(i => ({
    alt: i.alt, decoded: i.complete && i.naturalWidth > 0, width: i.naturalWidth,
  }));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({tables, images});
  document.body.appendChild(out);
});
</script>"""


def render(page: Path) -> dict:
    """What headless Chromium saw in ``page``: every table's cells, every image's state."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.DOTALL)
    assert match, f"no probe in Chromium's DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(unescape(match.group(1)))


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return [r for r in csv.reader(fh) if r]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cmp"
    assert main(["compare", "--methods", "genefl,fedavg", "--output-dir", str(out),
                 *TINY]) == 0
    return out


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y "
                    "chromium) to render the page headless")
def test_compare_report_renders_in_headless_chromium(compare_dir: Path, capsys) -> None:
    assert main(["report", str(compare_dir)]) == 0
    page_file = compare_dir / "report.html"
    assert f"compare report written to {page_file}" in capsys.readouterr().out
    page = page_file.read_text()
    # self-contained: nothing to fetch, no script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page

    assert "recorded by 2 runs" in page  # the machine of the runs, not of the report
    seen = render(page_file)
    tables = seen["tables"]
    # the two Markdown tables, cell for cell
    for name in ("known_table.md", "agnostic_table.md"):
        lines = [ln for ln in (compare_dir / name).read_text().splitlines()
                 if ln.startswith("|")]
        expected = [html.pipe_cells(ln) for ln in lines[:1] + lines[2:]]
        assert {"headers": expected[0], "rows": expected[1:]} in tables, name
    # compare.csv: every column and row (numbers may be shortened, never changed)
    rows = _rows(compare_dir / "compare.csv")
    csv_table = next(t for t in tables if t["headers"] == rows[0])
    assert [r[0] for r in csv_table["rows"]] == ["genefl", "fedavg"]
    for got, want in zip(csv_table["rows"], rows[1:]):
        for g, w in zip(got, want):
            assert g == w or float(g) == pytest.approx(float(w), rel=1e-5)
    # one row per run directory, machine recorded by the runs, the files
    runs = next(t for t in tables if t["headers"][:1] == ["run"])
    assert sorted(r[0] for r in runs["rows"]) == ["fedavg/seed0", "genefl/seed0"]
    machine = next(t for t in tables if ["git_commit"] in [r[:1] for r in t["rows"]])
    assert dict(machine["rows"])["python"]
    files = next(t for t in tables if t["headers"] == ["file", "bytes"])
    assert "compare.csv" in [r[0] for r in files["rows"]]
    assert len(tables) == 6

    # every image decoded by the browser; every PNG of the directory among them, intact
    pngs = sorted(p.name for p in compare_dir.glob("*.png"))
    assert len(pngs) == 3
    assert all(image["decoded"] and image["width"] > 200 for image in seen["images"])
    assert {i["alt"] for i in seen["images"]} >= set(pngs)
    embedded = _images(page)
    assert len(embedded) == len(seen["images"])
    for name in pngs:
        assert (compare_dir / name).read_bytes() in embedded, name
    for data in embedded:
        Image.open(io.BytesIO(data)).load()


@pytest.mark.e2e
def test_report_output_option(compare_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(compare_dir / "genefl" / "seed0"), "--output", str(target)]) == 0
    page = target.read_text()
    assert "genefl run report: seed0" in page
    assert len(_images(page)) == 3
