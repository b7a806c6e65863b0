"""GENE-FL's local regularisers (SPEC §3.2), as pure functions of named tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def smooth_loss(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    layer_groups: Sequence[Sequence[str]],
) -> torch.Tensor:
    """``L_gen = sum_l ||theta_l - Theta_l||^2 / numel(l)``.

    Args:
        params: the client's current tensors (with gradients).
        anchor: the cluster model's tensors (constants), same names.
        layer_groups: for each layer, the names of its parameter tensors; ``numel(l)``
            is the total element count of the group, so a large layer does not dominate
            a small one.

    """
    terms = []
    for names in layer_groups:
        numel = sum(params[n].numel() for n in names)
        if numel == 0:
            continue
        sq = sum((params[n] - anchor[n]).pow(2).sum() for n in names)
        terms.append(sq / numel)
    if not terms:
        return _zero(params)
    return torch.stack(terms).sum()


def _zero(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    device = next(iter(params.values())).device if params else None
    return torch.zeros((), device=device)


def elastic_loss(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """``L_elg = ||M * (theta - Theta)||^2`` summed over the masked tensors.

    ``masks`` holds ``1[F_hat > epsilon]`` per tensor; tensors absent from it are free.
    """
    terms = [(masks[n] * (params[n] - anchor[n])).pow(2).sum() for n in masks]
    if not terms:
        return _zero(params)
    return torch.stack(terms).sum()
