"""The real genefl ServerApp/ClientApp in a Flower 1.42 deployment: a SuperLink with TLS
and SuperNode authentication on loopback, one SuperNode per client (registered keys),
``flwr run`` of an app directory written by ``genefl flower init``.

* ``test_deployment_matches_genefl_run``: three known SuperNodes run the clustering and
  two known rounds; the two agnostic SuperNodes are started only once the ServerApp has
  logged its first round, are found by the per-round poll, and join from their
  cluster's learnGene. Everything that crosses the wire is counted exactly as by the
  in-process ``genefl run`` with the same options and seed: every client record's
  uploaded layers, upload, download and init bytes, and the run's byte totals
  (signature bytes included) are equal; each upload is exactly the tensors of the layers
  the client chose (the server counts the arrays it received). Accuracies agree within
  ``TOLERANCE`` = 1e-6: every process (ServerApp, each ClientApp, the reference run)
  runs the same float32 operations with one torch thread, so only float drift from
  another process layout could separate them; so far they have agreed to the last bit.
* ``test_killed_supernode_is_a_dropout``: a second run on the same SuperLink, with the
  agnostic SuperNodes connected from the start (held through the known phase, then
  joining); a known SuperNode sampled in round 1 is SIGKILLed (with its SuperExec and
  ClientApp processes) while round 1 is under way. The round closes (at the latest after
  ``round-timeout``), the client counts as a dropout (``dropped`` in ``clients.jsonl``,
  its event in ``nodes.jsonl``), the run completes and writes ``results.json``.

Bounded: each ``flwr run`` has a timeout; all processes are stopped by PID when the
module's deployment ends, and the logs stay under pytest's temporary directory (printed
on failure). About 4 minutes on 2 busy CPU cores: every Flower message starts a fresh
``flwr-clientapp`` process that imports torch and loads the data set.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import deployment as dep  # tests/flower/deployment.py
import pytest
from parity import ACCURACIES, BYTES

pytestmark = pytest.mark.deployment

_missing = dep.missing_prerequisites()
if _missing:
    pytest.skip(f"Flower deployment tests need: {_missing}", allow_module_level=True)

import torch  # noqa: E402

from genefl.engine.server import sample_participants  # noqa: E402
from genefl.models import build_model, list_layers  # noqa: E402

KNOWN, AGNOSTIC = 3, 2
#: the protocol, as ``genefl run`` / ``genefl flower init`` options
PROTOCOL = {
    "known-clients": KNOWN, "agnostic-clients": AGNOSTIC, "clusters": 2,
    "known-rounds": 2, "agnostic-rounds": 1, "clients-per-round": 2, "local-epochs": 1,
    "train-fraction": 0.25, "seed": 5, "device": "cpu",
}
#: accuracies: float drift only (same float32 ops, one torch thread everywhere)
TOLERANCE = 1e-6
#: a round's replies: covers a fresh flwr-clientapp process (torch import, data set) per
#: message on a busy machine; only the killed node's round waits this long
ROUND_TIMEOUT = 150
RUN_TIMEOUT = 420
#: every Flower process and the reference run: one torch/OpenMP thread
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: the ServerApp's line at the end of a round (``RoundLog``), as ``flwr run --stream``
#: shows it
ROUND_LINE = r"genefl: round {} \({} {}\)"


def _argv(options: dict) -> list[str]:
    out = []
    for key, value in options.items():
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def _genefl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "genefl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "genefl.cli"]
    env = dict(os.environ, **ONE_THREAD)
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"genefl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _node_config(cid: int) -> dict[str, object]:
    return {"client-id": cid, "kind": "known" if cid < KNOWN else "agnostic",
            "dataset": "digits"}


def check_same_as_reference(out: Path, reference: Path) -> None:
    """A Flower run's output directory against ``genefl run``'s (see the module
    docstring): bytes and per-client records equal, accuracies within TOLERANCE, each
    upload exactly the chosen layers.
    """
    results = json.loads((out / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    for key in BYTES:
        assert results[key] == expected[key], key
    for key in ACCURACIES:
        assert math.isclose(results[key], expected[key], abs_tol=TOLERANCE), \
            (key, results[key], expected[key])

    # per client and round: the same participants, layers and bytes
    got, want = _lines(out / "clients.jsonl"), _lines(reference / "clients.jsonl")
    fields = ("round", "phase", "client_id", "cluster", "upload_layers", "upload_bytes",
              "download_bytes", "init_bytes", "dropped")
    assert [[r.get(f) for f in fields] for r in got] == \
        [[r.get(f) for f in fields] for r in want]
    # each upload is exactly the tensors of the layers the client chose: the server
    # counts the arrays it received, 4 bytes per float
    layers = {la.name: la for la in
              list_layers(build_model("cnn", 1, 10, 8, torch.Generator()))}
    uploads = [r for r in got if r["upload_layers"]]
    assert len(uploads) == len(got)
    for r in uploads:
        assert r["upload_bytes"] == sum(layers[n].nbytes for n in r["upload_layers"]), r
    assert any(len(r["upload_layers"]) < len(layers) for r in uploads)


def check_late_agnostic_joins(out: Path) -> None:
    """The agnostic clients connected after round 0, joined and started from their
    cluster's learnGene (init bytes), in the agnostic round.
    """
    got = _lines(out / "clients.jsonl")
    results = json.loads((out / "results.json").read_text())
    events = _lines(out / "nodes.jsonl")
    joined = {e["client"]: e["round"] for e in events if e["event"] == "node-joined"}
    assert sorted(joined) == list(range(KNOWN + AGNOSTIC))
    assert all(joined[c] >= 1 for c in range(KNOWN, KNOWN + AGNOSTIC)), joined
    agn = [r for r in got if r["phase"] == "agnostic"]
    assert sorted(r["client_id"] for r in agn) == list(range(KNOWN, KNOWN + AGNOSTIC))
    assert all(r["init_bytes"] > 0 for r in agn)
    assert results["agnostic_joined"] == AGNOSTIC


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The in-process ``genefl run`` with the same options and seed."""
    out = tmp_path_factory.mktemp("genefl-run") / "out"
    _genefl("run", *_argv(PROTOCOL), "--output-dir", str(out), "--quiet")
    return out


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    """The app directory, written by ``genefl flower init``."""
    app = tmp_path_factory.mktemp("app") / "genefl-app"
    _genefl("flower", "init", str(app), *_argv(PROTOCOL), "--round-timeout",
            str(ROUND_TIMEOUT), "--node-wait", "300", "--wait-for-all", "true", "--quiet")
    assert 'serverapp = "genefl.flower.server_app:app"' in (app / "pyproject.toml").read_text()
    return app


@pytest.fixture(scope="module")
def loopback(tmp_path_factory):
    """SuperLink (TLS + node auth) on 127.0.0.1 and the three known SuperNodes; the keys
    of all five clients are registered.
    """
    creds = dep.make_credentials(tmp_path_factory.mktemp("creds"), KNOWN + AGNOSTIC)
    work = tmp_path_factory.mktemp("deployment")
    with dep.Deployment(work, creds) as d:
        d.extra_env.update(ONE_THREAD)
        link = d.start_superlink(bind_host="127.0.0.1")
        node_ids = [d.register(key) for key in creds.node_keys]
        nodes = {cid: d.start_supernode(f"supernode-{cid}", link, creds.node_keys[cid],
                                        _node_config(cid))
                 for cid in range(KNOWN)}
        for node in nodes.values():
            node.wait_for(r"SuperNode ID: \d+", timeout=60)
        yield d, link, nodes, node_ids


def test_deployment_matches_genefl_run(loopback, app_dir, reference, tmp_path):
    d, link, nodes, node_ids = loopback
    with d.reporting():
        out = tmp_path / "out"
        run = d.start_app(app_dir, {"output-dir": str(out)}, name="flwr-run-main")
        # the agnostic SuperNodes connect once the ServerApp has finished round 0
        run.wait_for(ROUND_LINE.format(0, "known", 0), timeout=RUN_TIMEOUT)
        assert not (out / "results.json").exists()
        for cid in range(KNOWN, KNOWN + AGNOSTIC):
            nodes[cid] = d.start_supernode(f"supernode-{cid}", link, d.creds.node_keys[cid],
                                           _node_config(cid))
        status = d.wait_app(run, timeout=RUN_TIMEOUT)
        assert status["status"] == "finished:completed"
        assert set(d.list_nodes().values()) == {"online"}

        check_same_as_reference(out, reference)
        check_late_agnostic_joins(out)
        assert "Uvicorn running on https://127.0.0.1:" in link.proc.text()


def test_killed_supernode_is_a_dropout(loopback, app_dir, tmp_path):
    d, link, nodes, node_ids = loopback
    with d.reporting():
        for cid in range(KNOWN, KNOWN + AGNOSTIC):  # connected before the run starts
            if cid not in nodes:
                nodes[cid] = d.start_supernode(f"supernode-{cid}", link,
                                               d.creds.node_keys[cid], _node_config(cid))
                nodes[cid].wait_for(r"SuperNode ID: \d+", timeout=60)
        out = tmp_path / "out"
        timeout = 60
        victim = sample_participants(PROTOCOL["seed"], "known", 1, list(range(KNOWN)),
                                     PROTOCOL["clients-per-round"])[0]
        run = d.start_app(app_dir, {"output-dir": str(out), "round-timeout": timeout,
                                    "wait-for-all": False}, name="flwr-run-kill")
        run.wait_for(ROUND_LINE.format(0, "known", 0), timeout=RUN_TIMEOUT)
        time.sleep(2)  # round 1's messages are out
        d.kill(nodes[victim])
        killed_at = time.monotonic()
        run.wait_for(ROUND_LINE.format(1, "known", 1), timeout=timeout + 60)
        assert time.monotonic() - killed_at <= timeout + 60
        status = d.wait_app(run, timeout=RUN_TIMEOUT)
        assert status["status"] == "finished:completed"

        results = json.loads((out / "results.json").read_text())
        assert results["dropped_updates"] == 1
        assert results["agnostic_joined"] == AGNOSTIC
        records = _lines(out / "clients.jsonl")
        lost = [(r["round"], r["client_id"], r["upload_bytes"]) for r in records
                if r["dropped"]]
        assert lost == [(1, victim, 0)]
        events = _lines(out / "nodes.jsonl")
        assert any(e["event"] in ("round-timeout", "client-failed")
                   and e.get("client") == victim and e["round"] == 1 for e in events), events
        # the early agnostic nodes were greeted before round 0 and held: no known-phase
        # work, then they joined in the agnostic round
        joined = {e["client"]: e["round"] for e in events if e["event"] == "node-joined"}
        assert all(joined[c] <= 0 for c in range(KNOWN + AGNOSTIC)), joined
        assert all(r["client_id"] < KNOWN for r in records if r["phase"] == "known")
        assert sorted(r["client_id"] for r in records if r["phase"] == "agnostic") == \
            list(range(KNOWN, KNOWN + AGNOSTIC))
