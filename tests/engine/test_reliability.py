"""Issue 4: poisoned or broken uploads are rejected, dropouts are survived."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_dataset

from genefl.algorithms.base import Upload
from genefl.config import resolve
from genefl.engine.simulation import run_simulation
from genefl.engine.validate import upload_problem
from genefl.models.layers import Layer

QUICK = dict(
    known_clients=6, agnostic_clients=6, clusters=2, known_rounds=3, agnostic_rounds=2,
    clients_per_round=3, local_epochs=1, batch_size=16, shards=2, device="cpu",
)
LAYERS = {
    "a": Layer("a", "linear", ("a.weight", "a.bias"), (), 6, 6),
    "n": Layer("n", "norm", ("n.weight",), ("n.running_mean",), 2, 4),
}
CURRENT = {
    "a.weight": torch.ones(2, 2), "a.bias": torch.zeros(2), "n.weight": torch.ones(2),
    "n.running_mean": torch.zeros(2),
}


def _upload(layers=("a",), params=None, masks=None) -> Upload:
    params = params if params is not None else {
        "a.weight": torch.full((2, 2), 1.5), "a.bias": torch.tensor([0.1, -0.1])}
    return Upload(7, 0, tuple(layers), params, 10, masks or {})


@pytest.mark.parametrize(
    "upload, needle",
    [
        (_upload(), None),
        (_upload(("zz",)), "unknown layer(s) zz"),
        (_upload(("n",), {"n.weight": torch.ones(2), "n.running_mean": torch.zeros(2)}),
         "does not exchange: n"),
        (_upload(params={"a.weight": torch.ones(2, 2)}), "missing ['a.bias']"),
        (_upload(params={"a.weight": torch.ones(3, 2), "a.bias": torch.zeros(2)}),
         "a.weight has shape (3, 2), expected (2, 2)"),
        (_upload(params={"a.weight": torch.tensor([[1.0, float("nan")], [1, 1]]),
                         "a.bias": torch.zeros(2)}), "NaN or infinite"),
        (_upload(params={"a.weight": torch.full((2, 2), float("inf")),
                         "a.bias": torch.zeros(2)}), "NaN or infinite"),
        (_upload(params={"a.weight": torch.ones(2, 2) * 1e6, "a.bias": torch.zeros(2)}),
         "update norm ratio"),
        (_upload(masks={"a.bias": torch.ones(3, dtype=torch.bool)}), "mask of a.bias"),
        # a NaN in an entry the mask does not send is not an error
        (_upload(params={"a.weight": torch.tensor([[1.0, float("nan")], [1, 1]]),
                         "a.bias": torch.zeros(2)},
                 masks={"a.weight": torch.tensor([[True, False], [True, True]])}), None),
    ],
)
def test_upload_problem_names_the_reason(upload: Upload, needle: str | None) -> None:
    problem = upload_problem(upload, CURRENT, LAYERS, {"a"}, max_update_ratio=1000.0)
    if needle is None:
        assert problem is None
    else:
        assert problem is not None and needle in problem


def test_norm_ratio_bound_is_relative_and_configurable() -> None:
    """||delta|| = ||0.5 * ones(2,2), (0.1, -0.1)|| = sqrt(1 + 0.02); ||current|| = 2."""
    ratio = (1.02 ** 0.5) / 2.0
    assert upload_problem(_upload(), CURRENT, LAYERS, {"a"}, ratio * 1.001) is None
    assert "exceeds the bound" in upload_problem(_upload(), CURRENT, LAYERS, {"a"}, ratio * 0.999)


def _run(method: str, transport=None, **overrides):
    config, params = resolve({}, {**QUICK, "method": method, **overrides})
    return run_simulation(config, params, dataset=make_dataset(), transport=transport)


def _poison(kind: str):
    def corrupt(upload: Upload) -> Upload:
        params = dict(upload.params)
        name = next(iter(params))
        if kind == "nan":
            params[name] = params[name].clone().fill_(float("nan"))
        elif kind == "scaled":
            params = {k: v * 1e6 for k, v in params.items()}
        elif kind == "shape":
            params[name] = torch.zeros(3, *params[name].shape)
        elif kind == "unknown":
            return dataclasses.replace(upload, layers=upload.layers + ("not.a.layer",))
        return dataclasses.replace(upload, params=params)

    return corrupt


#: uploads (in arrival order) of the known phase that get corrupted: 3 rounds x 3 clients
POISONED = {1, 4, 6, 8}
KINDS = ["nan", "scaled", "shape", "unknown"]


def _channel(kind: str):
    """A transport that corrupts (``poison``) or loses (``lost``) the POISONED uploads."""
    calls: list[int] = []

    def transport(upload: Upload) -> Upload | None:
        calls.append(upload.client_id)
        index = len(calls) - 1
        if index not in POISONED:
            return upload
        if kind == "lost":
            return None
        return _poison(KINDS[sorted(POISONED).index(index)])(upload)

    return transport


@pytest.mark.parametrize("method", ["fedavg", "genefl", "fedlps"])
def test_poisoned_uploads_are_rejected_and_the_run_matches_one_without_them(method) -> None:
    """NaN, x1e6, wrong shape and an unknown layer in four known-phase uploads: the server
    rejects exactly those; every cluster model, hence every later figure, is the same as
    in a run where those uploads never arrived."""
    poisoned = _run(method, _channel("poison"))
    lost = _run(method, _channel("lost"))
    assert poisoned["rejected_uploads"] == lost["dropped_updates"] == len(POISONED)
    assert _run(method)["rejected_uploads"] == 0
    for key in ("known_accuracy", "agnostic_accuracy_round0", "agnostic_accuracy_last10",
                "agnostic_round_accuracy", "learngene_bytes", "upload_bytes_agnostic"):
        assert poisoned[key] == lost[key], key
    # rejected uploads did cross the wire, so they are counted
    assert poisoned["upload_bytes"] > lost["upload_bytes"]


def test_every_upload_of_a_cluster_rejected_keeps_the_cluster_model() -> None:
    everything_nan = _poison("nan")
    results = _run("fedavg", lambda u: everything_nan(u), agnostic_rounds=0)
    untouched = _run("fedavg", lambda u: None, agnostic_rounds=0)
    assert results["rejected_uploads"] == QUICK["known_rounds"] * QUICK["clients_per_round"]
    assert results["known_accuracy"] == untouched["known_accuracy"]


def test_thirty_percent_dropout_completes_and_counts_only_what_was_sent() -> None:
    config_rounds = dict(known_rounds=10, agnostic_rounds=4)
    results = _run("fedavg", dropout_rate=0.3, **config_rounds)
    participations = (10 + 4) * QUICK["clients_per_round"]
    dropped = results["dropped_updates"]
    assert 0.1 * participations <= dropped <= 0.5 * participations
    model = results["model_bytes"]
    # uploads: one full model per client that did not drop out; downloads: every sampled
    # client downloaded before failing
    assert results["upload_bytes"] % model == 0
    known_sent = results["upload_bytes"] // model
    assert known_sent < 10 * QUICK["clients_per_round"]
    assert results["download_bytes"] == 10 * QUICK["clients_per_round"] * model
    assert 0.0 <= results["known_accuracy"] <= 1.0
    assert results["agnostic_joined"] >= 1
    no_dropout = _run("fedavg", **config_rounds)
    assert no_dropout["dropped_updates"] == 0
    assert no_dropout["upload_bytes"] == 10 * QUICK["clients_per_round"] * model
