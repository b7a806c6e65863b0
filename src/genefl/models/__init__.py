"""Models, their layers, and deterministic construction."""

from __future__ import annotations

import torch
from torch import nn

from genefl.errors import ConfigError
from genefl.models.cnn import SmallCNN
from genefl.models.init import reset_parameters
from genefl.models.layers import (
    Layer,
    get_params,
    layer_tensor_names,
    list_layers,
    model_nbytes,
    set_params,
)
from genefl.models.resnet import ResNet18

__all__ = [
    "MODELS",
    "Layer",
    "ResNet18",
    "SmallCNN",
    "build_model",
    "get_params",
    "layer_tensor_names",
    "list_layers",
    "model_nbytes",
    "reset_parameters",
    "set_params",
]

#: Names accepted by :func:`build_model`.
MODELS = ("cnn", "resnet18")


def build_model(
    name: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    generator: torch.Generator,
) -> nn.Module:
    """Build model ``name`` on the CPU, initialised only from ``generator``.

    The modules are constructed on the meta device (so the global RNG is not
    touched), materialised on the CPU and then initialised with
    :func:`reset_parameters`; ``image_size`` is only used by ``"cnn"``.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    with torch.device("meta"):
        if name == "cnn":
            model: nn.Module = SmallCNN(in_channels, num_classes, image_size)
        else:
            model = ResNet18(in_channels, num_classes)
    model.to_empty(device="cpu")
    reset_parameters(model, generator)
    return model
