"""GENE-FL's local regularisers (SPEC §3.2), as pure functions of named tensors.

``L_gen`` (Eq. 4) pulls the client toward its cluster model; ``L_elg`` (the abstract's
"constraints based on parameters with high Fisher values") pulls only the high-Fisher
entries. Both default to *plain* L2 norms, as the paper writes them: the pull on a layer
then has a fixed strength ``lambda`` whatever the layer's size or distance, so it acts
even when the difference is small. The squared forms are options (SPEC §3: measured
inert on the default digits run).

Every norm has the zero subgradient where its argument is zero (a client that starts
from the cluster model is not pushed anywhere at its first step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

#: ``L_gen`` forms: per-layer norm (Eq. 4, default), per-layer squared norm over the
#: layer's size (the first reading), one norm over the whole model
GEN_LOSSES = ("layer-norm", "squared", "model-norm")
#: ``L_elg`` forms: plain norm of the masked difference (default) or its square
ELG_LOSSES = ("norm", "squared")
#: ``L_elg`` masks: the high-Fisher entries (paper, default) or every parameter (ablation)
ELG_MASKS = ("fisher", "all")


def safe_norm(squared: torch.Tensor) -> torch.Tensor:
    """``sqrt(squared)`` with the zero subgradient at 0 (``torch.sqrt``'s is infinite)."""
    positive = squared > 0
    return torch.where(
        positive, squared.clamp_min(torch.finfo(squared.dtype).tiny).sqrt(),
        torch.zeros_like(squared),
    )


def smooth_loss(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    layer_groups: Sequence[Sequence[str]],
    form: str = "layer-norm",
) -> torch.Tensor:
    """``L_gen`` between the client's tensors and the cluster model's.

    Forms (``form``):

    * ``"layer-norm"``: ``sum_l ||theta_l - Theta_l||_2`` (Eq. 4; default). The gradient
      on layer ``l`` is the unit vector ``(theta_l - Theta_l) / ||.||``: every layer is
      pulled with the same force, so the pull per entry shrinks as ``1/sqrt(numel(l))``.
    * ``"squared"``: ``sum_l ||theta_l - Theta_l||^2 / numel(l)``.
    * ``"model-norm"``: ``||theta - Theta||_2`` over all grouped tensors at once.

    Args:
        params: the client's current tensors (with gradients).
        anchor: the cluster model's tensors (constants), same names.
        layer_groups: for each layer, the names of its parameter tensors (a layer is the
            group; tensors in no group are free).
        form: one of :data:`GEN_LOSSES`.

    """
    if form not in GEN_LOSSES:
        raise ValueError(f"unknown L_gen form {form!r}; expected one of {GEN_LOSSES}")
    squares, sizes = [], []
    for names in layer_groups:
        numel = sum(params[n].numel() for n in names)
        if numel == 0:
            continue
        squares.append(sum((params[n] - anchor[n]).pow(2).sum() for n in names))
        sizes.append(numel)
    if not squares:
        return _zero(params)
    sq = torch.stack(squares)
    if form == "squared":
        return (sq / torch.tensor(sizes, dtype=sq.dtype, device=sq.device)).sum()
    if form == "model-norm":
        return safe_norm(sq.sum())
    return safe_norm(sq).sum()


def _zero(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    device = next(iter(params.values())).device if params else None
    return torch.zeros((), device=device)


def elastic_loss(
    params: Mapping[str, torch.Tensor],
    anchor: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    form: str = "norm",
) -> torch.Tensor:
    """``L_elg = ||M * (theta - Theta)||_2`` over every masked tensor together (default),
    or its square (``form="squared"``).

    ``masks`` holds ``M = 1[F_hat > epsilon]`` per tensor; tensors absent from it are free.
    """
    if form not in ELG_LOSSES:
        raise ValueError(f"unknown L_elg form {form!r}; expected one of {ELG_LOSSES}")
    terms = [(masks[n] * (params[n] - anchor[n])).pow(2).sum() for n in masks]
    if not terms:
        return _zero(params)
    sq = torch.stack(terms).sum()
    return sq if form == "squared" else safe_norm(sq)
