"""Several clients' local training at once with ``torch.func`` (optional, for GPUs).

:func:`train_local_batched` does for ``K`` clients what :func:`~genefl.engine.local.
train_local` does for one, in one vectorised pass per step: the clients' weights are
stacked along a leading dimension and the model runs under ``torch.func.vmap`` with
``functional_call`` (each client's batch-norm running statistics are stacked too, so they
update per client). The summed loss has, for each client's slice of the stacked weights,
exactly that client's gradient, and SGD with momentum and weight decay acts elementwise,
so every client follows its own sequential trajectory up to floating-point reordering.

Limits (the engine falls back to the sequential loop otherwise): the clients must have the
same number of training samples (the batch shapes must agree at every step) and no local
objective (no extra loss, gradient hooks or frozen parameters). Batch order, the skip of a
trailing batch of one and divergence handling are those of ``train_local``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from genefl.algorithms.base import ClientData
from genefl.engine.local import LocalSettings, LocalStats
from genefl.types import ParamDict


def train_local_batched(
    model: nn.Module,
    starts: Sequence[Mapping[str, torch.Tensor]],
    data: Sequence[ClientData],
    settings: LocalSettings,
    generators: Sequence[torch.Generator],
) -> list[tuple[ParamDict, LocalStats]]:
    """Train ``K = len(starts)`` clients from their ``starts`` (every parameter and float
    buffer of ``model``) on their ``data`` (all with the same sample count); returns each
    client's trained tensors (the keys of its start) and its stats. ``model`` supplies
    the architecture only; its own weights are not changed.
    """
    if not (len(starts) == len(data) == len(generators)) or not starts:
        raise ValueError("starts, data and generators must be non-empty and of equal length")
    n = int(data[0].x.shape[0])
    if any(int(d.x.shape[0]) != n for d in data):
        raise ValueError("batched clients must hold the same number of training samples")
    param_names = [name for name, _ in model.named_parameters()]
    names = list(starts[0])
    stacked = {name: torch.stack([s[name].detach() for s in starts]) for name in names}
    params = {name: stacked[name].requires_grad_(True) for name in param_names}
    buffers = {name: t for name, t in stacked.items() if name not in params}
    optimiser = torch.optim.SGD(
        list(params.values()), lr=settings.lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay,
    )

    def forward(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**p, **b}, (x,))

    batched_forward = vmap(forward, in_dims=(0, 0, 0))
    k = len(starts)
    xs = torch.stack([d.x for d in data])  # (K, n, C, H, W)
    ys = torch.stack([d.y for d in data])  # (K, n)
    rows = torch.arange(k, device=xs.device)[:, None]
    steps, loss_sums = 0, [0.0] * k
    correct, seen = [0] * k, 0
    diverged: dict[int, LocalStats] = {}
    model.train()
    for _ in range(settings.epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(xs.device)
        for start in range(0, n, settings.batch_size):
            idx = orders[:, start : start + settings.batch_size]  # (K, B)
            if idx.shape[1] < 2 and n >= 2:
                continue  # as train_local: a batch of one breaks batch norm
            x, y = xs[rows, idx], ys[rows, idx]
            logits = batched_forward(params, buffers, x)  # (K, B, classes)
            losses = torch.stack([F.cross_entropy(logits[i], y[i]) for i in range(k)])
            values = losses.detach().tolist()
            active = []
            for i, value in enumerate(values):
                if i in diverged:
                    continue
                if not math.isfinite(value):
                    diverged[i] = LocalStats(steps, value, correct[i] / max(seen, 1), True)
                    continue
                active.append(i)
            if not active:
                break
            optimiser.zero_grad(set_to_none=True)
            losses[active].sum().backward()
            optimiser.step()
            steps += 1
            hits = (logits.detach().argmax(-1) == y).sum(dim=1).tolist()
            for i in active:
                loss_sums[i] += values[i]
                correct[i] += int(hits[i])
            seen += int(y.shape[1])
    out = []
    for i in range(k):
        trained = {name: stacked[name][i].detach().clone() for name in names}
        stats = diverged.get(i) or LocalStats(
            steps, loss_sums[i] / max(steps, 1), correct[i] / max(seen, 1), False
        )
        out.append((trained, stats))
    return out
