"""``--tensorboard DIR``: every numeric round field and the final results as TensorBoard
scalars, read back from the event files; a clear error before any work without TensorBoard.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest

from genefl.callbacks import RoundRecord
from genefl.callbacks.tensorboard import round_scalars, tensorboard_loggers
from genefl.cli import main

TINY = [
    "--known-rounds", "2", "--agnostic-rounds", "2", "--local-epochs", "1",
    "--known-clients", "6", "--agnostic-clients", "6", "--clusters", "2",
    "--clients-per-round", "3", "--device", "cpu", "--quiet",
]


def record(**kw) -> RoundRecord:
    base = dict(
        round=3, phase="agnostic", phase_round=1, participants=5, accuracy=0.5,
        val_accuracy=math.nan, train_loss=1.25, upload_bytes=100, download_bytes=200,
        init_bytes=0, cum_upload_bytes=300, gamma=None, chosen_layers="a:1;b:2", diverged=0,
        seconds=0.5,
    )
    return RoundRecord(**{**base, **kw})


def test_round_scalars_are_every_finite_numeric_field_but_the_step() -> None:
    scalars = round_scalars(record())
    assert scalars == {
        "phase_round": 1.0, "participants": 5.0, "accuracy": 0.5, "train_loss": 1.25,
        "upload_bytes": 100.0, "download_bytes": 200.0, "init_bytes": 0.0,
        "cum_upload_bytes": 300.0, "diverged": 0.0, "seconds": 0.5, "dropped": 0.0,
        "rejected": 0.0, "eval_clients": 0.0,
    }  # no round (the step), phase, chosen layers, gamma None, NaN val/eval accuracies
    scored = round_scalars(record(gamma=7, eval_accuracy=0.6, eval_accuracy_server=0.4))
    assert scored["gamma"] == 7.0
    assert scored["eval_accuracy"] == 0.6 and scored["eval_accuracy_server"] == 0.4


def test_a_numeric_field_added_to_the_record_is_logged_too() -> None:
    extended = dataclasses.make_dataclass(
        "Extended", [("future_metric", float, dataclasses.field(default=0.75)),
                     ("future_missing", float, dataclasses.field(default=math.nan))],
        bases=(RoundRecord,),
    )
    scalars = round_scalars(extended(**dataclasses.asdict(record())))
    assert scalars["future_metric"] == 0.75 and "future_missing" not in scalars


def test_no_logger_without_the_option() -> None:
    assert tensorboard_loggers(None) == []
    (logger,) = tensorboard_loggers("tb", "fedavg", "seed0")
    assert logger.log_dir == Path("tb", "fedavg", "seed0")


@pytest.mark.parametrize("command", ["run", "compare"])
def test_missing_tensorboard_is_a_clear_error_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, command: str
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    out = tmp_path / "out"
    code = main([command, "--output-dir", str(out), "--tensorboard", str(tmp_path / "tb"),
                 *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert "--tensorboard" in err and "pip install tensorboard" in err
    assert not out.exists() and not (tmp_path / "tb").exists()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    ).EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_a_resumed_run_replaces_what_the_interrupted_one_logged_from_its_resume_round(
    tmp_path: Path,
) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional)")
    from genefl.callbacks.tensorboard import TensorBoardLogger

    first = TensorBoardLogger(tmp_path)
    first.on_run_start({"resume_round": 0})
    for r in range(4):  # killed after round 3: never closed
        first.on_round_end(record(round=r, phase="known", accuracy=0.1 * r))
    second = TensorBoardLogger(tmp_path)
    second.on_run_start({"resume_round": 2})
    for r in (2, 3, 4):
        second.on_round_end(record(round=r, phase="known", accuracy=0.5 + 0.1 * r))
    second.on_run_end({"known_accuracy": 0.9, "method": "fedavg", "ok": True})
    logged = scalars(tmp_path)
    assert logged["known/accuracy"] == [
        (0, 0.0), (1, pytest.approx(0.1)), (2, pytest.approx(0.7)), (3, pytest.approx(0.8)),
        (4, pytest.approx(0.9)),
    ]
    assert logged["results/known_accuracy"] == [(5, pytest.approx(0.9))]
    assert "results/ok" not in logged


@pytest.mark.e2e
def test_run_logs_every_round_and_the_results_for_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional)")
    out, tb = tmp_path / "run", tmp_path / "tb"
    assert main(["run", "--output-dir", str(out), "--tensorboard", str(tb), *TINY]) == 0
    assert list(tb.glob("events.out.tfevents.*"))
    logged = scalars(tb)
    with (out / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for phase in ("known", "agnostic"):
        mine = [r for r in rows if r["phase"] == phase]
        for field in ("accuracy", "upload_bytes", "cum_upload_bytes", "gamma"):
            got = logged[f"{phase}/{field}"]
            assert [s for s, _ in got] == [int(r["round"]) for r in mine], (phase, field)
            assert [v for _, v in got] == pytest.approx([float(r[field]) for r in mine])
    results = json.loads((out / "results.json").read_text())
    assert logged["results/known_accuracy"] == [(4, pytest.approx(results["known_accuracy"]))]
    assert logged["results/upload_bytes"][0][1] == results["upload_bytes"]
    assert "results/method" not in logged


@pytest.mark.e2e
def test_compare_logs_each_run_in_its_own_folder(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional)")
    out, tb = tmp_path / "cmp", tmp_path / "tb"
    args = ["compare", "--methods", "fedavg", "--repeats", "2", "--output-dir", str(out),
            "--tensorboard", str(tb), *TINY]
    assert main(args) == 0
    for seed in (0, 1):
        results = json.loads((out / "fedavg" / f"seed{seed}" / "results.json").read_text())
        logged = scalars(tb / "fedavg" / f"seed{seed}")
        assert [v for _, v in logged["known/accuracy"]] == pytest.approx(
            results["known_round_accuracy"])
