"""Batched local training (torch.func.vmap over clients) against the sequential loop."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_dataset
from torch import nn

from genefl.algorithms.base import ClientData
from genefl.config import resolve
from genefl.engine.batched import train_local_batched
from genefl.engine.local import LocalSettings, train_local
from genefl.engine.simulation import run_simulation
from genefl.models import get_params, list_layers, set_params


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    ).double()


def client_data(k: int, n: int, seed: int) -> list[ClientData]:
    gen = torch.Generator().manual_seed(seed)
    return [
        ClientData(torch.randn(n, 1, 8, 8, generator=gen, dtype=torch.float64),
                   torch.randint(0, 3, (n,), generator=gen))
        for _ in range(k)
    ]


def sequential(model, starts, data, settings, seeds):
    layers = list_layers(model)
    out = []
    for start, d, seed in zip(starts, data, seeds):
        set_params(model, start)
        stats = train_local(model, d, settings, None, torch.Generator().manual_seed(seed))
        out.append((get_params(model, layers), stats))
    return out


@pytest.mark.parametrize("n", [48, 50])  # 50: a trailing batch of 2 (48) / of one (49)
def test_batched_training_equals_the_sequential_loop(n: int) -> None:
    model = tiny_model()
    layers = list_layers(model)
    base = get_params(model, layers)
    starts = [{k: v + 0.01 * i for k, v in base.items()} for i in range(3)]
    data = client_data(3, n, seed=1)
    settings = LocalSettings(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)
    seeds = [11, 12, 13]
    expected = sequential(model, starts, data, settings, seeds)
    got = train_local_batched(
        model, starts, data, settings, [torch.Generator().manual_seed(s) for s in seeds]
    )
    for (want, want_stats), (have, have_stats) in zip(expected, got):
        assert set(have) == set(want)
        for name in want:  # float64: only the summation order differs
            torch.testing.assert_close(have[name], want[name], rtol=1e-9, atol=1e-11)
        assert have_stats.steps == want_stats.steps
        assert have_stats.mean_loss == pytest.approx(want_stats.mean_loss, rel=1e-9)
        assert have_stats.train_accuracy == want_stats.train_accuracy
        assert not have_stats.diverged


def test_a_diverging_client_does_not_disturb_the_others() -> None:
    model = tiny_model()
    base = get_params(model, list_layers(model))
    data = client_data(3, 32, seed=2)
    data[1] = ClientData(data[1].x.clone().fill_(math.inf), data[1].y)
    settings = LocalSettings(epochs=2, batch_size=16, lr=0.05, momentum=0.9)
    seeds = [1, 2, 3]
    got = train_local_batched(
        model, [base] * 3, data, settings, [torch.Generator().manual_seed(s) for s in seeds]
    )
    assert got[1][1].diverged and not got[0][1].diverged and not got[2][1].diverged
    expected = sequential(model, [base] * 3, data, settings, seeds)
    assert expected[1][1].diverged
    for i in (0, 2):
        for name, value in expected[i][0].items():
            torch.testing.assert_close(got[i][0][name], value, rtol=1e-9, atol=1e-11)


def test_batched_clients_must_have_equal_sizes() -> None:
    model = tiny_model()
    base = get_params(model, list_layers(model))
    data = client_data(1, 20, 0) + client_data(1, 21, 0)
    gens = [torch.Generator(), torch.Generator()]
    with pytest.raises(ValueError, match="same number of training samples"):
        train_local_batched(model, [base, base], data, LocalSettings(1, 8, 0.1, 0.0), gens)


QUICK = dict(
    known_clients=6, agnostic_clients=6, clusters=2, known_rounds=3, agnostic_rounds=2,
    clients_per_round=4, local_epochs=2, device="cpu",
)


@pytest.mark.parametrize("method", ["fedavg", "genefl"])
def test_engine_batched_mode_matches_the_sequential_engine(method: str, monkeypatch) -> None:
    """FedAvg trains its equal-size clients together (float rounding aside, the same
    run); GENE-FL has a local objective, so it falls back and is bit-identical."""
    import genefl.engine.rounds as rounds

    groups: list[int] = []
    real = rounds.train_local_batched

    def spy(model, starts, *rest):
        groups.append(len(starts))
        return real(model, starts, *rest)

    monkeypatch.setattr(rounds, "train_local_batched", spy)
    dataset = make_dataset(per_class=30)
    runs = {}
    for batched in (False, True):
        config, params = resolve({**QUICK, "method": method, "batched_clients": batched}, {})
        runs[batched] = run_simulation(config, params, dataset=dataset)
    plain, batched = runs[False], runs[True]
    if method == "fedavg":
        assert groups and max(groups) >= 2  # clients really trained together
    else:
        assert groups == []
    for key in ("upload_bytes", "download_bytes", "upload_bytes_agnostic", "init_bytes"):
        assert plain[key] == batched[key], key
    for key in ("known_accuracy", "agnostic_accuracy_round0", "agnostic_accuracy_last10"):
        if method == "genefl":
            assert plain[key] == batched[key], key
        else:
            assert abs(plain[key] - batched[key]) <= 0.05, key
