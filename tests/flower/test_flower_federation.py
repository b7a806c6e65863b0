"""The ServerApp and ClientApp against the in-process engine, with dynamic nodes.

Messages go through :class:`loopgrid.LoopGrid` (real Flower messages, real ClientApp
and ServerApp code, no network), so joins, late nodes, dying nodes and a killed server
run in seconds; ``test_flower_simulation.py`` does the same run on Flower's simulation
engine.
"""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
pytest.importorskip("flwr")

from loopgrid import LoopGrid  # noqa: E402
from parity import ACCURACIES, BYTES  # noqa: E402

from genefl.config import resolve  # noqa: E402
from genefl.engine.server import sample_participants  # noqa: E402
from genefl.engine.simulation import run_simulation  # noqa: E402
from genefl.flower.client_app import make_client_app  # noqa: E402
from genefl.flower.runconfig import run_config_values  # noqa: E402
from genefl.flower.server_app import NODES_FILE, run_server  # noqa: E402
from genefl.models import build_model, list_layers  # noqa: E402

#: a small GENE-FL run with both phases: 4 known, 2 agnostic clients, 2 clusters
RUN = dict(known_clients=4, agnostic_clients=2, clusters=2, known_rounds=2,
           agnostic_rounds=2, clients_per_round=2, local_epochs=1, device="cpu")
#: accuracy tolerance between drivers (both run the same float32 ops; only summation
#: order could differ, which has not happened here)
TOLERANCE = 1e-9


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def in_process():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config, params = resolve(RUN, {})
        return run_simulation(config, params)
    finally:
        torch.set_num_threads(threads)


def _run_config(tmp_path, **extra):
    return run_config_values({**RUN, "output_dir": str(tmp_path / "out"), **extra})


def _grid(run_config, clients=range(6), state_dir=None):
    grid = LoopGrid(make_client_app(), run_config)
    for cid in clients:
        grid.add_node(_node(cid, state_dir))
    return grid


def _node(cid, state_dir=None):
    node = {"client-id": cid, "kind": "known" if cid < RUN["known_clients"] else "agnostic",
            "dataset": "digits"}
    if state_dir is not None:
        node["state-dir"] = str(state_dir)
    return node


def _same(results, reference):
    for key in BYTES:
        assert results[key] == reference[key], key
    for key in ACCURACIES:
        assert math.isclose(results[key], reference[key], abs_tol=TOLERANCE), key


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_flower_run_equals_the_in_process_engine(tmp_path, in_process):
    grid = _grid(_run_config(tmp_path))
    results = run_server(grid, grid.run_config)
    _same(results, in_process)
    assert set(results) == set(in_process)
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"config.toml", "rounds.csv", "clients.jsonl",
                                               "results.json", NODES_FILE, "checkpoint.pt"}
    records = _lines(out / "clients.jsonl")
    assert [(r["client_id"], r["upload_layers"], r["upload_bytes"], r["download_bytes"])
            for r in records] == [
        (r["client_id"], list(r["upload_layers"]), r["upload_bytes"], r["download_bytes"])
        for r in in_process_records(tmp_path)]
    # what each client uploaded is exactly the tensors of the layers it declared
    layers = {la.name: la for la in list_layers(build_model("cnn", 1, 10, 8, torch.Generator()))}
    uploads = [r for r in grid.replies if "upload" in r.content]
    assert len(uploads) == len(records)
    for reply in uploads:
        declared = reply.content["result"]["layers"]
        assert set(reply.content["upload"]) == {t for n in declared
                                                for t in layers[n].tensor_names}
    # signatures travelled as query messages, one per known client and per agnostic join
    queries = [m for m in grid.sent if m.metadata.message_type == "query"
               and m.content["config"]["what"] == "signature"]
    assert len(queries) == RUN["known_clients"] + RUN["agnostic_clients"]


def in_process_records(tmp_path):
    from genefl.callbacks import ClientLog

    config, params = resolve({**RUN, "output_dir": None}, {})
    path = tmp_path / "inproc.jsonl"
    run_simulation(config, params, [ClientLog(path)])
    return _lines(path)


def test_agnostic_nodes_that_connect_late_or_early(tmp_path, in_process):
    """Agnostic client 4 connects before the run and is held through the known phase;
    client 5 connects after the first round and is found by polling; both join by
    signature in the agnostic phase, as in-process (wait-for-all keeps the sampling)."""
    grid = _grid(_run_config(tmp_path, wait_for_all=True), clients=range(5))
    from genefl.callbacks.base import Callback

    class Connect(Callback):
        def on_round_end(self, record):
            if record.round == 0:
                grid.add_node(_node(5))

    results = run_server(grid, grid.run_config, [Connect()])
    _same(results, in_process)
    trained = {(m.content["config"]["phase"], int(m.content["config"]["client-id"]))
               for m in grid.sent if m.metadata.message_type == "train"}
    assert all(cid < RUN["known_clients"] for phase, cid in trained if phase == "known")
    assert {cid for phase, cid in trained if phase == "agnostic"} == {4, 5}
    joined = [e for e in _lines(tmp_path / "out" / NODES_FILE) if e["event"] == "node-joined"]
    assert [(e["client"], e["round"]) for e in joined][-1] == (5, 1)
    packages = [m for m in grid.sent if "package" in m.content]
    assert sorted(int(m.content["config"]["client-id"]) for m in packages) == [4, 5]


def test_a_node_that_stops_answering_is_a_dropout(tmp_path):
    """The node of a client sampled in round 1 dies (listed, silent): the round closes
    at the timeout, counts its download and no upload, logs it; the run completes."""
    grid = _grid(_run_config(tmp_path, round_timeout=0.5))
    victim = sample_participants(0, "known", 1, list(range(4)), 2)[0]
    from genefl.callbacks.base import Callback

    class Kill(Callback):
        def on_round_end(self, record):
            if record.round == 0:
                grid.silent.add(grid.node_of(victim))

    results = run_server(grid, grid.run_config, [Kill()])
    out = tmp_path / "out"
    assert results["dropped_updates"] == 1
    rows = list(csv.DictReader((out / "rounds.csv").open()))
    assert [int(r["dropped"]) for r in rows] == [0, 1, 0, 0]
    lost = [r for r in _lines(out / "clients.jsonl") if r["dropped"]]
    assert [(r["round"], r["client_id"], r["upload_bytes"]) for r in lost] == [(1, victim, 0)]
    assert lost[0]["download_bytes"] > 0
    events = [(e["event"], e.get("client")) for e in _lines(out / NODES_FILE)]
    assert ("round-timeout", victim) in events
    assert json.loads((out / "results.json").read_text())["agnostic_joined"] == 2


def test_a_killed_server_resumes_from_its_checkpoint(tmp_path, in_process):
    """The ServerApp dies during round 2 (after its clients trained); a new run with the
    same output directory resumes from the checkpoint of round 1 and, the nodes keeping
    their state in a state-dir, ends as the uninterrupted run."""
    from genefl.callbacks.base import Callback

    class Die(Callback):
        def on_round_end(self, record):
            if record.round == 2:
                raise KeyboardInterrupt("server killed")

    run_config = _run_config(tmp_path)
    state = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        run_server(_grid(run_config, state_dir=state), run_config, [Die()])
    assert not (tmp_path / "out" / "results.json").exists()
    grid = _grid(run_config, state_dir=state)  # new nodes, same clients and state-dirs
    results = run_server(grid, run_config)
    _same(results, in_process)
    events = [e["event"] for e in _lines(tmp_path / "out" / NODES_FILE)]
    assert "resume" in events
    rows = list(csv.DictReader((tmp_path / "out" / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2, 3]


def test_a_node_that_comes_back_without_state_restarts_its_client(tmp_path):
    """Agnostic client 4's node is replaced after its first round by a new node without
    state: it is recognised by its client id and sent its learnGene again."""
    run_config = _run_config(tmp_path, agnostic_rounds=3, clients_per_round=2)
    grid = _grid(run_config)
    from genefl.callbacks.base import Callback

    class Replace(Callback):
        def on_round_end(self, record):
            if record.phase == "agnostic" and record.phase_round == 0:
                grid.remove_node(grid.node_of(4))
                grid.add_node(_node(4))

    results = run_server(grid, run_config, [Replace()])
    assert results["dropped_updates"] == 0
    events = [(e["event"], e.get("client")) for e in _lines(tmp_path / "out" / NODES_FILE)]
    assert ("node-gone", 4) in events and ("node-back", 4) in events
    packages = [int(m.content["config"]["round"]) for m in grid.sent
                if "package" in m.content and int(m.content["config"]["client-id"]) == 4]
    assert packages == [2, 3]


def test_a_state_dir_keeps_runs_apart(tmp_path, in_process):
    """Nodes whose state-dir holds another run's versions (another seed, another output
    directory) start this run's clients afresh: the run equals the in-process one."""
    state = tmp_path / "state"
    other = run_config_values({**RUN, "seed": 1, "output_dir": str(tmp_path / "other")})
    run_server(_grid(other, state_dir=state), other)
    run_config = _run_config(tmp_path)
    results = run_server(_grid(run_config, state_dir=state), run_config)
    _same(results, in_process)
    assert len(list(state.glob("run-*"))) == 2
