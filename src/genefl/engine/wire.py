"""The wire: selecting, packing and counting the named layers that cross the network.

Every algorithm, the in-process engine and the Flower adapter use these functions, so a
byte is counted the same way everywhere: each float that crosses the wire counts as a
float32, 4 bytes (SPEC §6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from genefl.models.layers import Layer
from genefl.types import ParamDict

BYTES_PER_FLOAT = 4


def select_layers(
    params: Mapping[str, torch.Tensor],
    layers: Mapping[str, Layer],
    names: Iterable[str],
) -> ParamDict:
    """The tensors of the named layers (params + float buffers), as detached copies."""
    out: ParamDict = {}
    for name in names:
        try:
            layer = layers[name]
        except KeyError:
            raise KeyError(f"unknown layer {name!r}") from None
        for tensor_name in layer.tensor_names:
            out[tensor_name] = params[tensor_name].detach().clone()
    return out


def payload_bytes(
    params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None
) -> int:
    """Bytes of a payload on the wire: element count x 4.

    A tensor with a boolean mask in ``masks`` (a partial upload) counts only the entries
    it sends; the mask itself is not counted (it is fixed once per client and, for
    structured pruning, is a handful of channel indices).
    """
    masks = masks or {}
    count = 0
    for name, tensor in params.items():
        count += int(masks[name].sum()) if name in masks else int(tensor.numel())
    return BYTES_PER_FLOAT * count


def layers_bytes(layers: Mapping[str, Layer], names: Iterable[str]) -> int:
    """Bytes of the named layers on the wire, without building the payload."""
    return sum(layers[n].nbytes for n in names)


def pack(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Payload as float32 NumPy arrays (what a real transport serialises)."""
    return {k: t.detach().to("cpu", torch.float32).numpy().copy() for k, t in params.items()}


def unpack(arrays: Mapping[str, np.ndarray], device: torch.device | str = "cpu") -> ParamDict:
    """Inverse of :func:`pack`."""
    return {
        k: torch.tensor(np.asarray(a, dtype=np.float32), device=device) for k, a in arrays.items()
    }


@dataclass
class Traffic:
    """Byte counters of one phase (all float32 bytes)."""

    upload: int = 0
    download: int = 0
    #: what new clients download to initialise (the paper's *Initia*, summed)
    init: int = 0
    #: data signatures sent by clients for cluster matching
    signature: int = 0
    #: what full-model uploads would have cost for the same participation
    full_model_upload: int = 0

    def add(self, other: Traffic) -> None:
        """Accumulate another counter into this one."""
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class LayerChoices:
    """How often each layer was uploaded (for logs)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, names: Sequence[str]) -> None:
        """Count one upload's layers."""
        for n in names:
            self.counts[n] = self.counts.get(n, 0) + 1

    def render(self) -> str:
        """``name:count;name:count`` in first-seen order."""
        return ";".join(f"{k}:{v}" for k, v in self.counts.items())
