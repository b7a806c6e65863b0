"""What both inversion attacks share: the victim's loss and gradients, iDLG's label rule
and the result of an inversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Reconstruction:
    """Result of one inversion: ``images`` ``(B, C, H, W)`` in ``[0, 1]``; ``labels`` ``(B,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    #: the attack's matching loss of the returned images (what it chose restarts by)
    loss: float
    #: optimiser steps taken (all restarts together)
    steps: int
    #: whether the labels were inferred from the head's gradient (iDLG) or optimised (DLG)
    labels_inferred: bool


def infer_labels(head_weight_grad: torch.Tensor, batch: int) -> torch.Tensor:
    """IDLG's label rule: the ``batch`` rows of the last linear layer's weight gradient
    ``(classes, features)`` with the smallest sums, in ascending order of sum.

    With a batch of one and non-negative features (ReLU), the row of the true class is the
    only row whose sum is negative; for ``B > 1`` the rule assumes distinct labels.
    """
    if head_weight_grad.dim() != 2:
        raise ValueError(
            "the head's weight gradient must be (classes, features); got "
            f"{tuple(head_weight_grad.shape)}"
        )
    if not 1 <= batch <= head_weight_grad.shape[0]:
        raise ValueError(f"batch must be in [1, {head_weight_grad.shape[0]}]; got {batch}")
    return torch.argsort(head_weight_grad.sum(dim=1))[:batch]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy for hard labels ``(B,)`` or soft label logits ``(B, classes)``."""
    if labels.dim() == 1:
        return F.cross_entropy(logits, labels)
    return -(F.softmax(labels, dim=-1) * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def parameter_gradients(
    model: nn.Module,
    names: list[str],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Gradients of the mean cross-entropy of ``model(inputs)`` for the named parameters."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"not parameters of the model: {', '.join(missing)}")
    loss = cross_entropy(model(inputs), labels)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
    return dict(zip(names, grads))


def best_of_restarts(restarts: int, attempt: Callable[[], Reconstruction]) -> Reconstruction:
    """The attempt (of ``max(1, restarts)``) with the lowest matching loss, chosen by that
    loss alone (never by the original image; a NaN loss never wins); its ``steps`` count
    every attempt's.
    """
    best: Reconstruction | None = None
    steps = 0
    for _ in range(max(1, restarts)):
        found = attempt()
        steps += found.steps
        if best is None or (math.isfinite(found.loss) and not found.loss >= best.loss):
            best = found
    assert best is not None
    return replace(best, steps=steps)
