"""Issue 14: ``--workers N`` trains a round's clients in worker processes, bit-identical to
the sequential engine; worker deaths and Ctrl-C stop the run cleanly, leaving no process
behind; the data set is held once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import genefl
from genefl.algorithms.registry import algorithm_names
from genefl.config import RunConfig
from genefl.engine.workers import AUTO_MIN_WORK, resolve_workers, training_work
from genefl.machine import parent_pids

#: a small federation that still has joins, two clusters and several rounds per phase
TINY = dict(
    known_clients=8, agnostic_clients=8, clusters=2, clients_per_round=4, known_rounds=3,
    agnostic_rounds=2, local_epochs=1, eval_every=1, device="cpu",
    threads_per_worker=1,
)
CLI_TINY = [
    "--known-clients", "8", "--agnostic-clients", "8", "--clusters", "2",
    "--clients-per-round", "4", "--known-rounds", "4", "--agnostic-rounds", "2",
    "--local-epochs", "4", "--device", "cpu", "--threads-per-worker", "1", "--quiet",
]
#: figures that say how long a run took or how it was executed, not what it computed
EXECUTION = {"wall_seconds", "peak_rss_mb", "run", "seconds", "workers",
             "threads_per_worker"}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in EXECUTION}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def _tensors(value: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor inside a checkpoint, by its path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(_tensors(v, f"{prefix}/{i}"))
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """results.json (execution figures aside), rounds.csv, clients.jsonl and every tensor
    of the final checkpoint (cluster models, clients' models) are equal, bit for bit."""
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert _strip(ra) == _strip(rb)
    assert _rows(a / "rounds.csv") == _rows(b / "rounds.csv")
    ca = [_strip(json.loads(line)) for line in (a / "clients.jsonl").read_text().splitlines()]
    cb = [_strip(json.loads(line)) for line in (b / "clients.jsonl").read_text().splitlines()]
    assert ca == cb
    ta = _tensors(torch.load(a / "checkpoint.pt", weights_only=False))
    tb = _tensors(torch.load(b / "checkpoint.pt", weights_only=False))
    assert ta.keys() == tb.keys() and ta
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def _run(out: Path, **options: Any) -> Path:
    genefl.run(output_dir=str(out), quiet=True, **{**TINY, **options})
    return out


@pytest.mark.parametrize("method", algorithm_names())
def test_two_workers_give_the_sequential_run_bit_for_bit(tmp_path: Path, method: str) -> None:
    one = _run(tmp_path / "one", method=method, workers=1)
    two = _run(tmp_path / "two", method=method, workers=2)
    assert json.loads((two / "results.json").read_text())["workers"] == 2
    assert_same_run(one, two)


def test_workers_with_disk_store_dropouts_and_rejected_uploads(tmp_path: Path) -> None:
    """The disk store, clients that drop out and uploads the server rejects: still the
    sequential run, bit for bit (and the run really had drop-outs and rejections)."""
    faults = dict(method="genefl", client_store="disk", dropout_rate=0.3,
                  max_update_ratio=0.05)
    one = _run(tmp_path / "one", workers=1, **faults)
    three = _run(tmp_path / "three", workers=3, **faults)
    assert_same_run(one, three)
    rows = [json.loads(line) for line in (one / "clients.jsonl").read_text().splitlines()]
    assert any(r.get("dropped") for r in rows), "no client dropped out"
    assert any(r.get("rejected") for r in rows), "no upload was rejected"


def test_worker_counts_resolve() -> None:
    auto = RunConfig(workers=0)
    assert resolve_workers(auto, participants=5, cores=16) == (5, 3)
    assert resolve_workers(auto, participants=5, cores=2) == (2, 1)
    assert resolve_workers(RunConfig(workers=0, batched_clients=True), 5, cores=8) == (1, 0)
    assert resolve_workers(RunConfig(workers=1), 5, cores=8) == (1, 0)
    assert resolve_workers(RunConfig(workers=4, threads_per_worker=2), 5, cores=2) == (4, 2)
    # auto: too little training to pay for starting workers
    assert resolve_workers(auto, 5, cores=2, work=AUTO_MIN_WORK - 1) == (1, 0)
    assert resolve_workers(auto, 5, cores=2, work=AUTO_MIN_WORK) == (2, 1)
    assert resolve_workers(RunConfig(workers=2), 5, cores=2, work=1) == (2, 1)  # asked for
    config = RunConfig(known_rounds=3, agnostic_rounds=2, clients_per_round=4, local_epochs=2)
    assert training_work(config, [100, 300]) == 5 * 4 * 2 * 200
    with pytest.raises(genefl.ConfigError, match="--batched-clients .* --workers 2"):
        RunConfig(workers=2, batched_clients=True)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``."""
    return [c for c, parent in parent_pids().items() if parent == pid]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(out: Path, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    """A CLI run with 2 workers, once it has logged a round; and its workers' pids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "genefl.cli", "run", *CLI_TINY, "--workers", "2",
         "--output-dir", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # as from a terminal: a shell's background jobs (CI) inherit SIGINT ignored, and a
        # Python started so never turns Ctrl-C into KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        rounds = out / "rounds.csv"
        if rounds.exists() and rounds.read_text().count("\n") >= 2:
            workers = _workers_of(proc.pid)
            if len(workers) >= 2:
                return proc, workers
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the run did not get going: {proc.communicate()}")


def _workers_of(pid: int) -> list[int]:
    """The worker processes of run ``pid``: the children of its fork server."""
    servers = [c for c in _children(pid) if "forkserver" in _cmdline(c)]
    return [w for server in servers for w in _children(server)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_stops_the_run_and_resume_finishes_it(tmp_path: Path) -> None:
    """SIGKILL a worker mid-run: the run stops with a message naming the worker and
    client, its checkpoint intact; resuming with one worker ends exactly like an
    uninterrupted run."""
    reference = tmp_path / "reference"
    assert subprocess.run(
        [sys.executable, "-m", "genefl.cli", "run", *CLI_TINY, "--output-dir",
         str(reference)], capture_output=True, check=False).returncode == 0
    out = tmp_path / "crashed"
    proc, workers = _start(out)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"pid {workers[0]}) was killed by SIGKILL" in err
    assert "while training client" in err and "--resume" in err
    assert not any(_alive(p) for p in workers)
    assert not (out / "results.json").exists()
    done = subprocess.run(
        [sys.executable, "-m", "genefl.cli", "run", "--resume", str(out), "--workers", "1",
         "--quiet"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert_same_run(reference, out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_ctrl_c_or_a_killed_run_leaves_no_worker_behind(tmp_path: Path, how: str) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) stops the run and
    every worker; a SIGKILLed main process takes its workers with it."""
    proc, workers = _start(tmp_path / how)
    if how == "sigint":
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err
    else:
        proc.kill()
        proc.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "orphan worker processes"


def test_clients_index_one_buffer_and_convert_per_batch(toy_dataset) -> None:
    """Every client's data is a view of the data set's one uint8 buffer (no copy per
    client), and a batch comes out exactly as eager normalisation of the whole split."""
    import numpy as np

    from genefl.data.federation import build_federation
    from genefl.engine.simulation import channel_stats, client_tensors
    from genefl.seeding import numpy_rng

    fed = build_federation(toy_dataset, 4, 2, "shard", 2, 0.5, 0.1, numpy_rng(0, "federation"))
    clients = client_tensors(toy_dataset, fed, torch.device("cpu"))
    buffer = toy_dataset.train_images.__array_interface__["data"][0]
    mean, std = channel_stats(toy_dataset.train_images)
    pixels = torch.from_numpy(toy_dataset.train_images).double() / 255.0
    assert torch.allclose(mean.double(), pixels.mean(dim=(0, 2, 3), keepdim=True), atol=1e-7)
    assert torch.allclose(std.double(), pixels.std(dim=(0, 2, 3), keepdim=True), atol=1e-7)
    eager = (torch.from_numpy(toy_dataset.train_images).float() / 255.0 - mean) / std
    for split in fed.known + fed.agnostic:
        data = clients[split.client_id].train
        assert data.images.dtype == torch.uint8 and data.images.data_ptr() == buffer
        rows = torch.tensor([len(data) - 1, 0])
        assert torch.equal(data.rows(rows), eager[split.train[[len(data) - 1, 0]]])
        assert torch.equal(data.x, eager[split.train])
        assert np.array_equal(clients[split.client_id].pixels,
                              toy_dataset.train_images[split.train].reshape(len(data), -1)
                              .astype(np.float32) / 255.0)


def test_sharing_moves_the_data_set_into_shared_memory_in_place(toy_dataset) -> None:
    from genefl.engine.workers import dataset_from_shared, share_dataset

    before = toy_dataset.train_images.copy()
    tensors = share_dataset(toy_dataset)
    assert all(t.is_shared() for t in tensors)
    assert toy_dataset.train_images.__array_interface__["data"][0] == tensors[0].data_ptr()
    assert (toy_dataset.train_images == before).all()
    again = dataset_from_shared("toy", toy_dataset.num_classes, tensors)
    assert again.train_images.__array_interface__["data"][0] == tensors[0].data_ptr()
