"""Per-cluster, per-layer aggregation (SPEC §4, Eq. 10)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from genefl.types import ParamDict


def average_layers(
    current: Mapping[str, torch.Tensor],
    uploads: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
) -> ParamDict:
    """Average each tensor over the uploads that contain it; others keep their value.

    ``Theta^(l) = sum_i w_i theta_i^(l) / sum_i w_i`` over the ``N^(l)`` uploads that
    carry tensor ``l`` (uniform weights give Eq. 10's ``1/N^(l)`` mean).

    Args:
        current: the cluster model before aggregation (not modified).
        uploads: each client's uploaded tensors (a subset of ``current``'s names).
        weights: one positive weight per upload (e.g. sample counts); default uniform.

    Returns:
        A new dict with every name of ``current``.

    """
    if weights is None:
        weights = [1.0] * len(uploads)
    if len(weights) != len(uploads):
        raise ValueError("one weight per upload is required")
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    for upload, w in zip(uploads, weights):
        for name, tensor in upload.items():
            if name not in current:
                raise KeyError(f"upload carries unknown tensor {name!r}")
            acc = tensor.detach().to(current[name].dtype) * w
            sums[name] = sums[name] + acc if name in sums else acc
            totals[name] = totals.get(name, 0.0) + w
    out: ParamDict = {}
    for name, value in current.items():
        out[name] = sums[name] / totals[name] if name in sums else value.detach().clone()
    return out
