from __future__ import annotations

import torch
from torch import nn

from genefl.algorithms.base import ClientData, LocalObjective
from genefl.engine.local import LocalSettings, evaluate, train_local


def _data(n: int = 40) -> ClientData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return ClientData(x, y)


def test_train_local_counts_steps_and_learns() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    data = _data()
    settings = LocalSettings(epochs=20, batch_size=16, lr=0.1, momentum=0.9)
    stats = train_local(model, data, settings, None, torch.Generator().manual_seed(1))
    assert stats.steps == 20 * 3  # 40 samples in batches 16, 16, 8
    assert not stats.diverged
    assert evaluate(model, data.x, data.y) > 0.9


def test_same_generator_same_model() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = nn.Sequential(nn.Linear(4, 2))
        train_local(model, _data(), LocalSettings(2, 8, 0.1, 0.0), None,
                    torch.Generator().manual_seed(5))
        outs.append(model[0].weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


class _Explode(LocalObjective):
    def penalty(self, model: nn.Module) -> torch.Tensor:
        return torch.tensor(float("nan"))


def test_divergence_is_reported_not_trained_on() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    before = model[0].weight.detach().clone()
    stats = train_local(model, _data(), LocalSettings(1, 8, 0.1, 0.0), _Explode(),
                        torch.Generator().manual_seed(0))
    assert stats.diverged and stats.steps == 0
    assert torch.equal(model[0].weight, before)


class _Frozen(LocalObjective):
    frozen = frozenset({"0.bias"})


def test_frozen_parameters_do_not_move() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    bias = model[0].bias.detach().clone()
    train_local(model, _data(), LocalSettings(2, 8, 0.1, 0.0), _Frozen(),
                torch.Generator().manual_seed(0))
    assert torch.equal(model[0].bias, bias)
