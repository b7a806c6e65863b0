"""Deterministic re-initialisation that draws all randomness from one generator."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import init as nn_init

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


def _uniform_from(
    tensor: torch.Tensor, generator: torch.Generator, *, kaiming: bool, bound: float = 0.0
) -> None:
    """Fill ``tensor`` in place, drawing on the generator's device, then copy."""
    tmp = torch.empty(tensor.shape, dtype=tensor.dtype, device=generator.device)
    if kaiming:
        nn_init.kaiming_uniform_(tmp, a=math.sqrt(5), generator=generator)
    else:
        nn_init.uniform_(tmp, -bound, bound, generator=generator)
    tensor.copy_(tmp)


def _reset_affine(module: nn.Module, generator: torch.Generator) -> None:
    weight = module.weight
    _uniform_from(weight, generator, kaiming=True)
    bias = getattr(module, "bias", None)
    if bias is not None:
        fan_in, _ = nn_init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        _uniform_from(bias, generator, kaiming=False, bound=bound)


def _reset_norm(module: nn.Module) -> None:
    if isinstance(module, nn.modules.batchnorm._NormBase):
        module.reset_running_stats()  # deterministic: zeros / ones / 0
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    if weight is not None:
        weight.fill_(1.0)
    if bias is not None:
        bias.zero_()


def reset_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``model`` like PyTorch's defaults, using only ``generator``.

    Conv and Linear weights get ``kaiming_uniform_(a=sqrt(5))`` and biases
    ``uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))``; norm layers get weight 1,
    bias 0, running mean 0, running variance 1 and ``num_batches_tracked`` 0.
    Modules are visited in registration order, so the same generator state
    gives identical weights.  A module of another type that directly owns
    parameters or buffers must define ``reset_parameters(generator)`` (called with
    ``generator``); otherwise it raises ``TypeError`` (it would keep weights not drawn
    from ``generator``).
    """
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                _reset_affine(module, generator)
            elif isinstance(module, _NORM_TYPES):
                _reset_norm(module)
            else:
                owns = any(True for _ in module.parameters(recurse=False)) or any(
                    b is not None for b in module.buffers(recurse=False)
                )
                if owns and _takes_generator(module):
                    module.reset_parameters(generator=generator)
                elif owns:
                    raise TypeError(
                        f"reset_parameters does not support module {name!r} of type "
                        f"{type(module).__name__}: give it a method "
                        "reset_parameters(self, generator) that fills its tensors from "
                        "the generator"
                    )


def _takes_generator(module: nn.Module) -> bool:
    """Whether ``module`` has a ``reset_parameters`` method with a ``generator`` argument."""
    method = getattr(module, "reset_parameters", None)
    if not callable(method):
        return False
    try:
        return "generator" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def materialise(factory: Callable[[], nn.Module], generator: torch.Generator) -> nn.Module:
    """Construct ``factory()`` on the meta device (no RNG touched), allocate it on the CPU
    and initialise it with :func:`reset_parameters` from ``generator`` alone.
    """
    with torch.device("meta"):
        model = factory()
    model.to_empty(device="cpu")
    reset_parameters(model, generator)
    return model
