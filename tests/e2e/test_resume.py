"""Issue 4: a run SIGKILLed at any point and resumed ends exactly like an uninterrupted one."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genefl.cli import main

ARGS = [
    "--known-rounds", "6", "--agnostic-rounds", "4", "--local-epochs", "2",
    "--known-clients", "8", "--agnostic-clients", "8", "--clusters", "2",
    "--clients-per-round", "3", "--device", "cpu", "--quiet",
]
#: figures that legitimately differ between an interrupted and an uninterrupted run
TIMING = {"wall_seconds", "peak_rss_mb", "run"}


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open() as fh:
        return max(0, sum(1 for _ in fh) - 1)


def _kill_after(out: Path, rounds_done: int, delay: float) -> bool:
    """Start a run, SIGKILL it ``delay`` s after its output folder exists and
    ``rounds_done`` rounds are logged; True if the kill landed before the run finished."""
    # same thread count as this process: bit-identity needs the same reduction order
    proc = subprocess.Popen(
        [sys.executable, "-m", "genefl.cli", "run", *ARGS, "--output-dir", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (
        not (out / "config.toml").exists() or _rows(out / "rounds.csv") < rounds_done
    ) and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("run made no progress")
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return not (out / "results.json").exists()


def _without_timing(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in TIMING}


def _round_rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


@pytest.mark.e2e
def test_kill_and_resume_ten_times_gives_identical_results(tmp_path: Path, capsys) -> None:
    reference = tmp_path / "reference"
    assert main(["run", *ARGS, "--output-dir", str(reference)]) == 0
    expected = json.loads((reference / "results.json").read_text())
    expected_rows = _round_rows(reference / "rounds.csv")
    expected_clients = (reference / "clients.jsonl").read_text().count("\n")
    interrupted = 0
    # kill points: before the first checkpoint, then mid-round in each later round
    for i, (rounds_done, delay) in enumerate(
        [(0, 0.0), (0, 1.5), (1, 0.01), (2, 0.05), (3, 0.0), (4, 0.03), (5, 0.02),
         (6, 0.01), (7, 0.04), (9, 0.0)]
    ):
        out = tmp_path / f"killed{i}"
        interrupted += _kill_after(out, rounds_done, delay)
        if (out / "results.json").exists():
            continue  # finished before the kill landed: nothing to resume
        assert main(["run", "--resume", str(out), "--quiet"]) == 0
        results = json.loads((out / "results.json").read_text())
        assert _without_timing(results) == _without_timing(expected), f"kill point {i}"
        assert _round_rows(out / "rounds.csv") == expected_rows
        assert (out / "clients.jsonl").read_text().count("\n") == expected_clients
    assert interrupted >= 8
    capsys.readouterr()


def test_resume_refuses_a_changed_configuration(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    short = ["--known-rounds", "2", "--agnostic-rounds", "1", "--local-epochs", "1"]
    assert main(["run", *ARGS, *short, "--output-dir", str(out)]) == 0
    (out / "results.json").rename(out / "results.done")  # pretend it was interrupted
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "lr: checkpoint 0.01, now 0.5" in err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no config.toml" in capsys.readouterr().err
    (out / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["run", "--resume", str(out)]) == 2
    assert "not a readable genefl checkpoint" in capsys.readouterr().err
