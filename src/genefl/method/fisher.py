"""Diagonal Fisher information of a client's model on its own data (SPEC §3.1).

``F_j = mean_n (d log p(y_n | x_n; theta) / d theta_j)^2`` — the mean over samples of
squared *per-sample* gradients of the cross-entropy, with the model in evaluation mode
(normalisation layers use their running statistics, so each sample's gradient is well
defined and independent of the other samples in a chunk).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from genefl.types import ParamDict

#: Upper bound on the per-sample gradients held at once (bytes); the chunk shrinks to fit.
PER_SAMPLE_BUDGET_BYTES = 1 << 30


def fisher_diagonal(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 128,
) -> ParamDict:
    """Exact empirical Fisher diagonal of every trainable parameter.

    Args:
        model: the network; its train/eval mode is restored afterwards.
        inputs: ``(n, C, H, W)`` float tensor on the model's device.
        labels: ``(n,)`` int64 class indices.
        chunk_size: samples per vectorised chunk (memory vs. speed); lowered so that a
            chunk's per-sample gradients fit :data:`PER_SAMPLE_BUDGET_BYTES` (ResNet-18:
            about 22 samples per GiB).

    Returns:
        ``{param_name: tensor}`` of the parameter's shape, the mean over the ``n``
        samples of squared per-sample gradients.

    """
    if inputs.shape[0] == 0:
        raise ValueError("fisher_diagonal needs at least one sample")
    was_training = model.training
    model.eval()
    try:
        params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
        buffers = {k: b.detach() for k, b in model.named_buffers()}

        def sample_loss(p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
            logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
            return F.cross_entropy(logits, y.unsqueeze(0))

        per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
        n_params = sum(p.numel() for p in params.values())
        chunk_size = max(1, min(chunk_size, PER_SAMPLE_BUDGET_BYTES // max(4 * n_params, 1)))
        total = {k: torch.zeros_like(p) for k, p in params.items()}
        for start in range(0, inputs.shape[0], chunk_size):
            grads = per_sample_grads(
                params, inputs[start : start + chunk_size], labels[start : start + chunk_size]
            )
            for k, g in grads.items():
                total[k] += g.pow(2).sum(dim=0)
        n = float(inputs.shape[0])
        return {k: t / n for k, t in total.items()}
    finally:
        model.train(was_training)


def minmax_normalise(fisher: Mapping[str, torch.Tensor]) -> ParamDict:
    """Min-max normalise over *all* entries of all tensors to ``[0, 1]`` (``F_hat``).

    A constant Fisher (max == min) normalises to zeros.
    """
    lo = min(float(t.min()) for t in fisher.values())
    hi = max(float(t.max()) for t in fisher.values())
    span = hi - lo
    if span <= 0.0:
        return {k: torch.zeros_like(t) for k, t in fisher.items()}
    return {k: (t - lo) / span for k, t in fisher.items()}


def fisher_mask(fisher_hat: Mapping[str, torch.Tensor], epsilon: float) -> ParamDict:
    """``M = 1[F_hat > epsilon]`` as float tensors (1 = constrained to the cluster)."""
    return {k: (t > epsilon).to(t.dtype) for k, t in fisher_hat.items()}
