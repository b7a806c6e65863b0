"""Per-cluster, per-layer aggregation (SPEC §4, Eq. 10), with optional per-entry masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from genefl.types import ParamDict


def average_layers(
    current: Mapping[str, torch.Tensor],
    uploads: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
    masks: Sequence[Mapping[str, torch.Tensor]] | None = None,
) -> ParamDict:
    """Average each tensor over the uploads that contain it; others keep their value.

    ``Theta^(l) = sum_i w_i theta_i^(l) / sum_i w_i`` over the ``N^(l)`` uploads that
    carry tensor ``l`` (uniform weights give Eq. 10's ``1/N^(l)`` mean). A partial upload
    (structured pruning, FedLPS) carries a boolean mask for some tensors: the mean is then
    taken per entry over the uploads whose mask sends it, and an entry nobody sent keeps
    its current value.

    Args:
        current: the cluster model before aggregation (not modified).
        uploads: each client's uploaded tensors (a subset of ``current``'s names).
        weights: one positive weight per upload (e.g. sample counts); default uniform.
        masks: per upload, tensor name -> bool mask of the tensor's shape (entries sent);
            a tensor without a mask is sent whole.

    Returns:
        A new dict with every name of ``current``.

    """
    if weights is None:
        weights = [1.0] * len(uploads)
    if masks is None:
        masks = [{}] * len(uploads)
    if len(weights) != len(uploads) or len(masks) != len(uploads):
        raise ValueError("one weight and one mask dict per upload are required")
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, torch.Tensor | float] = {}
    for upload, w, mask in zip(uploads, weights, masks):
        for name, tensor in upload.items():
            if name not in current:
                raise KeyError(f"upload carries unknown tensor {name!r}")
            value = tensor.detach().to(current[name].dtype)
            share: torch.Tensor | float = w
            if name in mask:
                share = mask[name].to(value.dtype) * w
            acc = value * share
            sums[name] = sums[name] + acc if name in sums else acc
            totals[name] = totals[name] + share if name in totals else share
    out: ParamDict = {}
    for name, value in current.items():
        if name not in sums:
            out[name] = value.detach().clone()
            continue
        total = totals[name]
        if isinstance(total, torch.Tensor):
            sent = total > 0
            out[name] = torch.where(sent, sums[name] / total.clamp_min(1e-30), value.detach())
        else:
            out[name] = sums[name] / total
    return out
