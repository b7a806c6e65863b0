"""Models (a registry of builders: ``@register_model``), their layers, construction."""

from __future__ import annotations

from genefl.models.cnn import SmallCNN
from genefl.models.init import materialise, reset_parameters
from genefl.models.layers import (
    Layer,
    get_params,
    layer_tensor_names,
    list_layers,
    model_nbytes,
    set_params,
)
from genefl.models.registry import (
    build_model,
    get_model_builder,
    model_description,
    model_names,
    register_model,
)
from genefl.models.resnet import ResNet18, ResNet20

__all__ = [
    "Layer",
    "ResNet18",
    "ResNet20",
    "SmallCNN",
    "build_model",
    "get_model_builder",
    "get_params",
    "layer_tensor_names",
    "list_layers",
    "materialise",
    "model_description",
    "model_names",
    "model_nbytes",
    "register_model",
    "reset_parameters",
    "set_params",
]
