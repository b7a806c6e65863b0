"""The command-line tool, end to end (subprocess where exit codes and output matter)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from genefl.cli import main
from genefl.config import load_toml

GENEFL = [sys.executable, "-m", "genefl.cli"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(GENEFL + args, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_default_run_learns_and_saves_uploads(tmp_path: Path) -> None:
    """`genefl run` with no option: digits, small CNN, scaled-down protocol."""
    proc = _run(["run", "--quiet", "--output-dir", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "known-client accuracy" in proc.stdout
    assert "agnostic accuracy, round 0" in proc.stdout
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    for key in ("known_accuracy", "agnostic_accuracy_round0", "agnostic_accuracy_last10",
                "upload_bytes", "download_bytes", "full_model_upload_bytes",
                "learngene_bytes", "wall_seconds"):
        assert isinstance(results[key], (int, float)), key
    # 5 known classes, 4 per client: chance is 1/4 per client; digits is easy
    assert results["known_accuracy"] > 0.8
    assert results["agnostic_accuracy_last10"] > 0.6
    assert results["agnostic_accuracy_round0"] > 0.3
    assert 0 < results["upload_bytes"] < results["full_model_upload_bytes"]
    assert 0 < results["learngene_bytes"] < results["model_bytes"]
    with (out / "rounds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 50
    assert {"round", "phase", "accuracy", "upload_bytes", "download_bytes", "gamma",
            "chosen_layers", "seconds"} <= set(rows[0])
    assert sum(int(r["upload_bytes"]) for r in rows if r["phase"] == "known") == (
        results["upload_bytes"]
    )
    config = load_toml(out / "config.toml")
    assert config["dataset"] == "digits" and config["lambda1"] == 0.5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lambda1", "-1"], "--lambda1 must be >= 0"),
        (["--shards", "abc"], "--shards must be int"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--partition", "zipf"], "--partition"),
        (["--clusters", "30"], "--clusters (30) must be <= --known-clients"),
        (["--method", "nope"], "--method must be one of"),
        (["--epsilon", "2"], "--epsilon must be in [0, 1]"),
        (["--device", "tpu"], "--device"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--config", "/nonexistent.toml"], "/nonexistent.toml"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    proc = _run(["run", *args, "--output-dir", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # rejected before any work


def test_config_file_and_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'method = "fedavg"\nknown-rounds = 1\nagnostic_rounds = 1\nknown_clients = 6\n'
        "agnostic_clients = 6\nclusters = 2\nclients_per_round = 2\nlocal_epochs = 1\n"
    )
    out = tmp_path / "o"
    code = main(["run", "--config", str(cfg), "--local-epochs", "2", "--quiet",
                 "--output-dir", str(out)])
    assert code == 0
    resolved = load_toml(out / "config.toml")
    assert resolved["method"] == "fedavg"
    assert resolved["local_epochs"] == 2  # the option overrides the file
    assert resolved["known_rounds"] == 1
    results = json.loads((out / "results.json").read_text())
    assert results["upload_bytes"] == results["full_model_upload_bytes"]
    # refuses to overwrite results unless asked
    assert main(["run", "--config", str(cfg), "--quiet", "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_unknown_config_key_is_rejected(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("lamda1 = 0.3\n")
    assert main(["run", "--config", str(cfg)]) == 2
    assert "lamda1" in capsys.readouterr().err


def test_methods_lists_registry(capsys) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "genefl" in out and "fedavg" in out and "local" in out


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist",
)
def test_fashion_mnist_run(tmp_path: Path) -> None:
    """The system copy of Fashion-MNIST through the whole CLI (CI installs it)."""
    proc = _run(["run", "--dataset", "fashion-mnist", "--train-fraction", "0.03",
                 "--known-rounds", "2", "--agnostic-rounds", "1", "--local-epochs", "2",
                 "--known-clients", "5", "--agnostic-clients", "5", "--clusters", "2",
                 "--clients-per-round", "5", "--quiet", "--output-dir", str(tmp_path / "o")],
                tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["known_accuracy"] > 0.5


def _write_tiny_cifar10(root: Path, per_batch: int = 40) -> None:
    """Real CIFAR-10 python-pickle layout with balanced random images."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        batch = {
            b"labels": [i % 10 for i in range(per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)


@pytest.mark.parametrize("model", ["cnn", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_cifar10_files_run_end_to_end(model: str, tmp_path: Path) -> None:
    """A data directory in torchvision's CIFAR-10 layout runs through the whole pipeline."""
    _write_tiny_cifar10(tmp_path / "data")
    out = tmp_path / "o"
    code = main([
        "run", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", model,
        "--known-clients", "2", "--agnostic-clients", "2", "--clusters", "1",
        "--clients-per-round", "2", "--known-rounds", "1", "--agnostic-rounds", "1",
        "--local-epochs", "1", "--shards", "2", "--quiet", "--output-dir", str(out),
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    # the wire's byte count of the model equals 4 bytes per float, counted here directly
    import torch

    from genefl.models import build_model

    net = build_model(model, 3, 10, 32, torch.Generator().manual_seed(0))
    floats = sum(p.numel() for p in net.parameters()) + sum(
        b.numel() for b in net.buffers() if b.is_floating_point()
    )
    assert results["model_bytes"] == 4 * floats
    assert results["run"]["model_bytes"] == results["model_bytes"]
    if model == "resnet18":
        assert results["num_layers"] == 41
        assert 11.1e6 < results["model_bytes"] / 4 < 11.3e6
