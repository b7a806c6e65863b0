"""Flower deployment with TLS and SuperNode authentication, on loopback and across
network namespaces (Flower 1.42; harness in ``tests/flower/deployment.py``).

Skipped, with the reason in pytest's summary, without flwr or openssl; the namespace
test also without ``ip`` (Debian iproute2) or root/CAP_NET_ADMIN. Deselect all of them
with ``-m "not deployment"``. The loopback tests run the small ``pingapp`` (one
weighted-average round that reports which nodes took part and the node config each
had): they are about who may connect, and the real genefl app on loopback is
``test_deployment_genefl.py``. The namespace test runs the real genefl app (a one-round
GENE-FL federation of two known clients), so that the federation itself is checked
across a network that is not loopback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import deployment as dep  # tests/flower/deployment.py
import pytest

pytestmark = pytest.mark.deployment

_missing = dep.missing_prerequisites()
if _missing:
    pytest.skip(f"Flower deployment tests need: {_missing}", allow_module_level=True)

#: The Flower app the deployments run (the real genefl app can replace it).
APP_DIR = dep.PING_APP
NODES = 2
NETNS_SUBNET = "10.231.7"
NETNS_LINK_IP = f"{NETNS_SUBNET}.1"


@pytest.fixture(scope="module")
def creds(tmp_path_factory) -> dep.Credentials:
    """One CA, a SuperLink certificate for loopback and the namespace address, keys."""
    return dep.make_credentials(tmp_path_factory.mktemp("creds"), NODES, [NETNS_LINK_IP])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> dep.Credentials:
    """A second, unrelated CA: SuperNodes trusting only it must not connect."""
    return dep.make_credentials(tmp_path_factory.mktemp("other-ca"), 0)


def _node_config(i: int) -> dict[str, object]:
    return {"partition-id": i, "num-partitions": NODES, "data-dir": f"/srv/genefl data/{i}"}


#: the genefl run of the namespace test: NODES known clients (one SuperNode each), one
#: agnostic client that the run never needs (no agnostic round)
GENEFL_RUN = {"known_clients": NODES, "agnostic_clients": 1, "clusters": 1,
              "known_rounds": 1, "agnostic_rounds": 0, "clients_per_round": NODES,
              "local_epochs": 1, "train_fraction": 0.2, "device": "cpu",
              "round_timeout": 240.0, "node_wait": 120.0}


def _genefl_node_config(i: int) -> dict[str, object]:
    return {"client-id": i, "kind": "known", "dataset": "digits"}


def _check_report(report_file: Path, node_ids: list[int]) -> None:
    report = json.loads(report_file.read_text())
    assert sorted(int(n) for n in report["nodes"]) == sorted(node_ids)
    seen = sorted(report["nodes"].values(), key=lambda c: int(c["partition-id"]))
    assert seen == [{k: str(v) for k, v in _node_config(i).items()} for i in range(NODES)]
    assert report["average"] == pytest.approx(report["expected"], abs=1e-12)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory, creds):
    """SuperLink (TLS + node auth) on 127.0.0.1 with NODES registered SuperNodes."""
    work = tmp_path_factory.mktemp("loopback")
    with dep.Deployment(work, creds) as d:
        link = d.start_superlink(bind_host="127.0.0.1")
        node_ids = [d.register(key) for key in creds.node_keys]
        nodes = [
            d.start_supernode(f"supernode-{i}", link, key, _node_config(i))
            for i, key in enumerate(creds.node_keys)
        ]
        for node in nodes:
            node.wait_for(r"SuperNode ID: \d+", timeout=60)
        yield d, link, node_ids


def test_loopback_tls_auth_run(loopback, tmp_path):
    d, link, node_ids = loopback
    with d.reporting():
        assert link.proc.alive()
        assert d.list_nodes() == dict.fromkeys(node_ids, "online")
        report = tmp_path / "report.json"
        run = d.run_app(APP_DIR, {"out-file": str(report), "min-nodes": NODES}, timeout=150)
        assert run["status"] == "finished:completed"
        _check_report(report, node_ids)
        log = link.proc.text()
        assert "Uvicorn running on https://127.0.0.1:" in log  # TLS on, not plain HTTP
        assert re.search(r"POST /v1/fleet/activate-node HTTP/1\.1\" 200", log)


def test_unregistered_supernode_refused(loopback, creds):
    d, link, node_ids = loopback
    with d.reporting():
        rogue = d.start_supernode("supernode-unregistered", link, creds.unregistered_key,
                                  {"partition-id": 99})
        rc = rogue.wait_exit(timeout=45)
        assert rc != 0
        assert "Failed to activate SuperNode" in rogue.text()
        # The SuperLink refused exactly this key and never listed a node for it.
        pem = dep.public_key_pem(creds.unregistered_key).replace("\n", "\\n")
        refusal = [ln for ln in link.proc.text().splitlines() if "No SuperNode found" in ln]
        assert any(pem in ln for ln in refusal), refusal
        assert sorted(d.list_nodes()) == sorted(node_ids)


def test_supernode_without_key_refused(loopback):
    """``--enable-supernode-auth`` stops key-less SuperNodes from registering themselves."""
    d, link, node_ids = loopback
    with d.reporting():
        anon = d.start_supernode("supernode-no-key", link, None, {"partition-id": 98})
        rc = anon.wait_exit(timeout=45)
        assert rc != 0, anon.text()
        assert "SuperNode ID" not in anon.text()
        assert "All SuperNodes must be registered via the CLI" in anon.text()
        assert sorted(d.list_nodes()) == sorted(node_ids)


def test_supernode_with_wrong_ca_refused(loopback, creds, other_ca):
    d, link, _ = loopback
    with d.reporting():
        host, port = link.address.rsplit(":", 1)
        assert dep.https_health(host, int(port), creds.ca) is None
        assert "CERTIFICATE_VERIFY_FAILED" in (dep.https_health(host, int(port), other_ca.ca) or "")
        # A registered key does not help a SuperNode that cannot verify the SuperLink.
        node = d.start_supernode("supernode-wrong-ca", link, creds.node_keys[0],
                                 _node_config(0), root_ca=other_ca.ca, max_wait_s=10)
        rc = node.wait_exit(timeout=45)
        assert rc != 0
        assert "certificate verify failed" in node.text().lower().replace("_", " ")
        assert "SuperNode ID" not in node.text()


def test_unregister_revokes_supernode(loopback, creds):
    """``flwr supernode unregister`` ends a connected SuperNode and bars its key.

    Runs last among the loopback tests: it takes SuperNode 0 out of the shared fixture.
    """
    d, link, node_ids = loopback
    with d.reporting():
        node = next(p for p in d.procs if p.name == "supernode-0")
        assert node.alive()
        d.flwr("supernode", "unregister", str(node_ids[0]), d.connection)
        node.wait_exit(timeout=45)
        assert d.list_nodes()[node_ids[0]] == "unregistered"
        again = d.start_supernode("supernode-0-again", link, creds.node_keys[0], _node_config(0))
        assert again.wait_exit(timeout=45) != 0
        assert "Failed to activate SuperNode" in again.text()
        assert "SuperNode ID" not in again.text()


def test_namespaces_tls_auth_run(tmp_path, creds):
    """SuperLink and SuperNodes in separate network namespaces, reached at 10.231.7.1."""
    reason = dep.netns_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    with dep.netns_topology(peers=NODES, subnet=NETNS_SUBNET) as topo, \
            dep.Deployment(tmp_path, creds) as d:
        admin_ns = topo.peer_ns[0]  # the flwr CLI runs from a SuperNode's namespace
        d.cli_netns = admin_ns
        d.extra_env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        link = d.start_superlink(bind_host=topo.link_ip, netns=topo.link_ns,
                                 probe_netns=admin_ns)
        assert link.address.startswith(f"{NETNS_LINK_IP}:")
        # Nothing listens on loopback in the SuperLink's namespace.
        port = int(link.address.rsplit(":", 1)[1])
        assert dep.https_health("127.0.0.1", port, creds.ca, netns=topo.link_ns) is not None
        node_ids = [d.register(key) for key in creds.node_keys]
        nodes = [
            d.start_supernode(f"supernode-{i}", link, key, _genefl_node_config(i),
                              netns=topo.peer_ns[i], runtime_port=9094)
            for i, key in enumerate(creds.node_keys)
        ]
        rogue = d.start_supernode("supernode-unregistered", link, creds.unregistered_key,
                                  {"partition-id": 99}, netns=topo.peer_ns[1],
                                  runtime_port=9095)
        for node in nodes:
            node.wait_for(r"SuperNode ID: \d+", timeout=60)
        assert rogue.wait_exit(timeout=45) != 0
        assert "Failed to activate SuperNode" in rogue.text()
        from genefl.flower.deploy import write_app

        out = tmp_path / "out"
        app = write_app(tmp_path / "genefl-app", {**GENEFL_RUN, "output_dir": str(out)})
        d.run_app(app, timeout=300)
        results = json.loads((out / "results.json").read_text())
        assert results["cluster_sizes"] == [NODES]
        records = [json.loads(ln) for ln in (out / "clients.jsonl").read_text().splitlines()]
        assert sorted(r["client_id"] for r in records) == list(range(NODES))
        assert all(r["upload_bytes"] > 0 and not r["dropped"] for r in records)
        events = [json.loads(ln) for ln in (out / "nodes.jsonl").read_text().splitlines()]
        assert sorted(int(e["node"]) for e in events if e["event"] == "node-joined") == \
            sorted(node_ids)
        log = link.proc.text()
        assert f"Uvicorn running on https://{NETNS_LINK_IP}:" in log
        peers = set(re.findall(r"(10\.231\.7\.\d+):\d+ - \"POST /v1/fleet/activate-node", log))
        assert peers == set(topo.peer_ips)
