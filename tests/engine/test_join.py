"""Agnostic clients join the nearest cluster (SPEC §5, Eq. 11-12), checked against a slow
reference: every joiner's signature, the centres at the moment it joins, the cluster it is
given, and the centres and counts afterwards.
"""

from __future__ import annotations

import numpy as np

from genefl.config import resolve
from genefl.engine.simulation import prepare_simulation
from genefl.method.cluster import data_signature


def _reference_nearest(signature: np.ndarray, centers: np.ndarray) -> int:
    best, best_d = -1, float("inf")
    for k in range(centers.shape[0]):
        d = float(sum((float(a) - float(b)) ** 2 for a, b in zip(signature, centers[k])))
        if d < best_d:
            best, best_d = k, d
    return best


def test_joiners_go_to_the_nearest_centre_and_centres_are_running_means() -> None:
    config, params = resolve({}, {
        "method": "fedavg", "dataset": "digits", "train_fraction": 0.4, "known_clients": 10,
        "agnostic_clients": 10, "clusters": 3, "known_rounds": 1, "agnostic_rounds": 3,
        "clients_per_round": 5, "local_epochs": 1, "shards": 2, "device": "cpu",
    })
    sim = prepare_simulation(config, params)
    engine, server = sim.engine, sim.server
    known_counts = list(server.counts)
    assert sum(known_counts) == config.known_clients
    members: dict[int, list[np.ndarray]] = {k: [] for k in range(config.clusters)}
    for cid in sim.known_ids:
        members[server.assignment[cid]].append(
            data_signature(sim.clients[cid].pixels, config.signature_dim)
        )
    joins: list[tuple[int, int, int]] = []  # (client, reference choice, engine's choice)
    real_join = engine.fed.join

    def spy(client_id: int, signature: np.ndarray):
        expected = _reference_nearest(signature, server.centers.copy())
        counts_before = list(server.counts)
        out = real_join(client_id, signature)
        k = server.assignment[client_id]
        joins.append((client_id, expected, k))
        assert server.counts == [c + (j == k) for j, c in enumerate(counts_before)]
        members[k].append(signature)
        return out

    engine.fed.join = spy  # type: ignore[method-assign]
    engine.run_phase("known", sim.known_ids, config.known_rounds, config.clients_per_round)
    signatures = {
        cid: data_signature(sim.clients[cid].pixels, config.signature_dim)
        for cid in sim.agnostic_ids
    }
    engine.run_phase("agnostic", sim.agnostic_ids, config.agnostic_rounds,
                     config.clients_per_round, signatures=signatures)
    sim.close()

    assert len(joins) == len(server.joined) >= config.clients_per_round
    assert [j[0] for j in joins] == sorted({j[0] for j in joins}, key=[j[0] for j in joins].index)
    for cid, expected, got in joins:
        assert got == expected, f"client {cid} joined cluster {got}, nearest is {expected}"
    # the joiners do not all land in one cluster here, so "always cluster 0" cannot pass
    assert len({got for _, _, got in joins}) > 1
    # counts grew by the joiners; each centre is the mean of its members' signatures
    grown = [known_counts[k] + sum(got == k for _, _, got in joins)
             for k in range(config.clusters)]
    assert server.counts == grown
    for k in range(config.clusters):
        assert np.allclose(server.centers[k], np.mean(members[k], axis=0), atol=1e-9), k
