"""Structured (output-channel) pruning by L1 norm, as masks (FedLPS, SPEC §7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from genefl.models.layers import Layer


def prunable_groups(
    layers: Sequence[Layer], exclude: Sequence[str] = ()
) -> list[tuple[Layer, Layer | None]]:
    """``(conv or linear layer, the norm layer right after it or None)`` pairs.

    A norm layer is paired with the conv/linear layer just before it in model order (the
    layer it normalises). Layers named in ``exclude`` (e.g. the classifier head) are left
    out.
    """
    groups: list[tuple[Layer, Layer | None]] = []
    for i, layer in enumerate(layers):
        if layer.kind not in ("conv", "linear") or layer.name in exclude:
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        groups.append((layer, nxt if nxt is not None and nxt.kind == "norm" else None))
    return groups


def kept_channels(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool ``(out,)``: the ``max(1, ceil((1 - ratio) * out))`` output channels of largest
    L1 norm (ties to the lower index).
    """
    out = weight.shape[0]
    keep = max(1, math.ceil((1.0 - ratio) * out - 1e-9))
    norms = weight.detach().abs().reshape(out, -1).sum(dim=1)
    order = torch.sort(norms, descending=True, stable=True).indices[:keep]
    mask = torch.zeros(out, dtype=torch.bool, device=weight.device)
    mask[order] = True
    return mask


def channel_masks(
    params: Mapping[str, torch.Tensor],
    groups: Sequence[tuple[Layer, Layer | None]],
    ratio: float,
) -> dict[str, torch.Tensor]:
    """Tensor name -> bool mask (tensor's shape) keeping each group's strongest channels.

    A group's channels are chosen on its layer's first parameter (the weight, ``(out,
    ...)``); the mask covers that layer's tensors (weight rows, bias) and every tensor of
    its norm layer (weight, bias, running statistics).
    """
    masks: dict[str, torch.Tensor] = {}
    for layer, norm in groups:
        weight = params[layer.param_names[0]]
        keep = kept_channels(weight, ratio)
        names = list(layer.tensor_names) + (list(norm.tensor_names) if norm else [])
        for name in names:
            tensor = params[name]
            if tensor.shape[0] != keep.shape[0]:
                continue  # e.g. a norm over a different axis: left whole
            shape = (-1,) + (1,) * (tensor.dim() - 1)
            masks[name] = keep.reshape(shape).expand_as(tensor).clone()
    return masks
