"""Layers: the unit of masks, uploads and aggregation in GENE-FL.

A *layer* is one module that directly owns parameters (a convolution, a linear
map, a normalisation layer together with its floating-point running
statistics).  Integer buffers such as ``num_batches_tracked`` belong to no
layer.  Bytes are counted as elements x 4 (float32 on the wire).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from genefl.types import ParamDict

#: Bytes per transmitted element (float32 on the wire).
BYTES_PER_ELEMENT = 4

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


@dataclass(frozen=True)
class Layer:
    """One module that directly owns parameters or float buffers."""

    name: str
    kind: str
    param_names: tuple[str, ...]
    buffer_names: tuple[str, ...]
    param_numel: int
    numel: int

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """Full names of its parameters followed by its float buffers."""
        return self.param_names + self.buffer_names

    @property
    def nbytes(self) -> int:
        """Bytes of all its tensors on the wire (float32)."""
        return self.numel * BYTES_PER_ELEMENT


def layer_kind(module: nn.Module) -> str:
    """Return ``"conv"``, ``"linear"``, ``"norm"`` or the lowercase class name."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORM_TYPES):
        return "norm"
    return type(module).__name__.lower()


def _full_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def list_layers(model: nn.Module) -> list[Layer]:
    """List the layers of ``model`` in registration (``named_modules``) order."""
    layers: list[Layer] = []
    for mod_name, module in model.named_modules():
        params = [
            (_full_name(mod_name, n), p)
            for n, p in module.named_parameters(recurse=False)
        ]
        buffers = [
            (_full_name(mod_name, n), b)
            for n, b in module.named_buffers(recurse=False)
            if b is not None and b.is_floating_point()
        ]
        if not params and not buffers:
            continue
        param_numel = sum(p.numel() for _, p in params)
        layers.append(
            Layer(
                name=mod_name,
                kind=layer_kind(module),
                param_names=tuple(n for n, _ in params),
                buffer_names=tuple(n for n, _ in buffers),
                param_numel=param_numel,
                numel=param_numel + sum(b.numel() for _, b in buffers),
            )
        )
    return layers


def layer_tensor_names(layers: Sequence[Layer], names: Iterable[str]) -> list[str]:
    """Return the tensor names of the layers called ``names``, in the given order."""
    by_name = {layer.name: layer for layer in layers}
    out: list[str] = []
    for name in names:
        layer = by_name.get(name)
        if layer is None:
            known = ", ".join(repr(n) for n in list(by_name)[:10])
            more = ", ..." if len(by_name) > 10 else ""
            raise KeyError(f"unknown layer {name!r}; known layers: {known}{more}")
        out.extend(layer.tensor_names)
    return out


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters())
    tensors.update((n, b) for n, b in model.named_buffers() if b is not None)
    return tensors


def get_params(model: nn.Module, layers: Iterable[Layer]) -> ParamDict:
    """Return detached clones of every tensor of ``layers``, keyed by state_dict name."""
    tensors = _named_tensors(model)
    out: ParamDict = {}
    for layer in layers:
        for name in layer.tensor_names:
            if name not in tensors:
                raise KeyError(f"layer tensor {name!r} is not in the model")
            out[name] = tensors[name].detach().clone()
    return out


def set_params(model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Copy ``params`` into the model's tensors in place; other tensors are unchanged.

    All names and shapes are checked before anything is copied.
    """
    tensors = _named_tensors(model)
    for name, value in params.items():
        target = tensors.get(name)
        if target is None:
            raise KeyError(f"model has no parameter or buffer named {name!r}")
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"shape mismatch for {name!r}: model has {tuple(target.shape)}, "
                f"got {tuple(value.shape)}"
            )
    with torch.no_grad():
        for name, value in params.items():
            tensors[name].copy_(value)


def model_nbytes(layers: Iterable[Layer]) -> int:
    """Return the total wire bytes of ``layers``."""
    return sum(layer.nbytes for layer in layers)


def layer_table(layers: Iterable[Layer]) -> list[dict[str, int | str]]:
    """Every layer's name, kind, parameter count and wire bytes, as plain JSON rows."""
    return [
        {"name": la.name, "kind": la.kind, "params": la.param_numel, "bytes": la.nbytes}
        for la in layers
    ]


def head_layer(layers: Sequence[Layer]) -> str:
    """Name of the classifier head: the last linear layer in model order."""
    for layer in reversed(layers):
        if layer.kind == "linear":
            return layer.name
    raise ValueError("the model has no linear layer to serve as classifier head")


#: name parts of projection shortcuts (ours and torchvision's), not on the main path
SHORTCUT_PARTS = ("shortcut", "downsample")


def is_shortcut(layer: Layer) -> bool:
    """Whether the layer belongs to a residual projection shortcut."""
    return any(part in layer.name.split(".") for part in SHORTCUT_PARTS)


def last_conv_layers(layers: Sequence[Layer], count: int = 4) -> list[str]:
    """Names of the last ``count`` convolutions on the main path, in model order.

    Projection shortcuts (1x1 convs named ``shortcut``/``downsample``) are skipped, so on
    ResNet-18 these are ``layer4``'s four 3x3 convolutions (SPEC §7: 31.50 MiB).
    """
    convs = [layer.name for layer in layers if layer.kind == "conv" and not is_shortcut(layer)]
    if len(convs) < count:
        raise ValueError(f"the model has {len(convs)} main-path convolutions, fewer than {count}")
    return convs[-count:]


def encoder_split(layers: Sequence[Layer]) -> int:
    """Index splitting the layers into a first half (encoder) and the rest (predictor).

    The split is ``len // 2``, moved past any normalisation layer so that a norm layer stays
    with the convolution before it.
    """
    split = len(layers) // 2
    while 0 < split < len(layers) and layers[split].kind == "norm":
        split += 1
    return split
