"""The one local training loop every algorithm uses (SGD, tensor-indexed batches)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genefl.algorithms.base import ClientData, LocalObjective


@dataclass(frozen=True)
class LocalSettings:
    """Hyperparameters of local training."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> LocalSettings:
        """The local-training numbers of a :class:`~genefl.config.RunConfig`."""
        return cls(config.local_epochs, config.batch_size, config.lr, config.momentum,
                   config.weight_decay)


@dataclass
class LocalStats:
    """Outcome of one client's local training."""

    steps: int
    mean_loss: float
    train_accuracy: float
    diverged: bool


def train_local(
    model: nn.Module,
    data: ClientData,
    settings: LocalSettings,
    objective: LocalObjective | None,
    generator: torch.Generator,
) -> LocalStats:
    """Train ``model`` in place for ``settings.epochs`` epochs on ``data``.

    Each epoch visits the client's samples once in a fresh order drawn from
    ``generator`` (CPU), in batches of ``settings.batch_size`` (the last one smaller);
    the loss is the cross-entropy plus ``objective.penalty(model)``. A fresh SGD
    optimiser is made per call (optimiser state is not kept between rounds).
    Training stops early, with ``diverged=True``, as soon as the loss is not finite.
    """
    frozen = objective.frozen if objective is not None else frozenset()
    trainable = [p for n, p in model.named_parameters() if p.requires_grad and n not in frozen]
    optimiser = torch.optim.SGD(
        trainable, lr=settings.lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )
    model.train()
    n = len(data)
    steps, loss_sum, correct, seen = 0, 0.0, 0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=generator).to(data.y.device)
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            if idx.numel() < 2 and n >= 2:
                # a batch of one breaks batch norm in training mode: fold it into the next
                continue
            x, y = data.rows(idx), data.y[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if objective is not None:
                extra = objective.penalty(model)
                if extra is not None:
                    loss = loss + extra
            value = float(loss.detach())
            if not math.isfinite(value):
                return LocalStats(steps, value, correct / max(seen, 1), diverged=True)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if objective is not None:
                objective.after_backward(model)
            optimiser.step()
            steps += 1
            loss_sum += value
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += int(y.numel())
    return LocalStats(steps, loss_sum / max(steps, 1), correct / max(seen, 1), diverged=False)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy in [0, 1] of ``model`` (eval mode) on ``(x, y)``; NaN when empty."""
    if x.shape[0] == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / x.shape[0]
