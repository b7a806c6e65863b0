"""What a malicious server observes of a victim, and the model it attacks with (SPEC §8).

The victim computes the gradient of its cross-entropy on private images at its own
weights. The server sees that gradient only for the *parameters of the layers the method
uploads* (and, for a partial upload, only the sent entries); it knows those layers'
weights (it received them) and nothing else: every other layer is random to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from genefl.models.layers import Layer, set_params
from genefl.privacy.gradients import parameter_gradients
from genefl.types import ParamDict


def shared_parameter_names(layers: Mapping[str, Layer], shared: Sequence[str]) -> list[str]:
    """Parameter names (buffers carry no gradient) of the ``shared`` layers, model order."""
    unknown = [n for n in shared if n not in layers]
    if unknown:
        raise KeyError(f"unknown layers: {', '.join(unknown)}")
    return [p for name in layers if name in set(shared) for p in layers[name].param_names]


def observed_gradients(
    model: nn.Module,
    victim: Mapping[str, torch.Tensor],
    names: Sequence[str],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    noise_sigma2: float = 0.0,
    generator: torch.Generator | None = None,
) -> ParamDict:
    """The gradient the server receives: mean cross-entropy of ``inputs`` ``(B, C, H, W)``
    (model space) at the victim's weights, for the parameters ``names`` only, in ``eval``
    mode; with ``noise_sigma2 > 0`` each entry gets Gaussian noise of that variance (the
    paper's DP control, drawn from ``generator``).
    """
    set_params(model, victim)
    model.eval()
    grads = parameter_gradients(model, list(names), inputs, labels)
    out: ParamDict = {}
    for name, g in grads.items():
        g = g.detach().clone()
        if noise_sigma2 > 0:
            noise = torch.randn(g.shape, generator=generator, dtype=g.dtype)
            g = g + noise.to(g.device) * noise_sigma2**0.5
        out[name] = g
    return out


def attacker_params(
    victim: Mapping[str, torch.Tensor],
    random: Mapping[str, torch.Tensor],
    layers: Mapping[str, Layer],
    shared: Sequence[str],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> ParamDict:
    """The weights the server attacks with: the victim's values for every tensor of the
    ``shared`` layers (parameters and running statistics; for a masked tensor only its
    sent entries), ``random`` everywhere else.
    """
    masks = masks or {}
    out = {k: v.detach().clone() for k, v in random.items()}
    for name in shared:
        for tensor in layers[name].tensor_names:
            value = victim[tensor].detach().to(out[tensor].device)
            if tensor in masks:
                mask = masks[tensor].to(value.device)
                out[tensor] = torch.where(mask, value, out[tensor])
            else:
                out[tensor] = value.clone()
    return out
