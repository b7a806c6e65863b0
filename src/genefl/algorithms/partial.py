"""Methods that exchange one fixed subset of the layers (FedBN, ParFed, FedFina).

A participant downloads the cluster's values of the shared layers, keeps its own values of
the rest between rounds (the base :meth:`~genefl.algorithms.base.Algorithm.start_params`
overlays what it received on its own model), trains everything, and uploads the shared
layers; the server averages them per layer. A new client starts from the cluster's shared
layers and fresh weights elsewhere.

ParFed and FedFina split the model at its last ``c`` main-path convolutions (SPEC §7):
``c = max(1, round(4 n / 17))`` for a model with ``n`` main-path convolutions (projection
shortcuts excluded), so 4 on ResNet-18 (``n = 17``, its ``layer4`` convolutions, the
paper's setting) and 1 on the 4-convolution small CNN; ``--partial-convs`` sets ``c``
directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genefl.algorithms.base import Algorithm, ClientContext
from genefl.errors import ConfigError
from genefl.models.layers import Layer, is_shortcut, last_conv_layers
from genefl.options import option


@dataclass(frozen=True)
class PartialConvsParams:
    """ParFed's and FedFina's option (one field, shared by both methods)."""

    partial_convs: int = option(
        0, "ParFed/FedFina: last main-path convolutions kept local (ParFed) or shared "
        "(FedFina); 0 = max(1, round(4 n / 17)) of the model's n main-path convolutions",
        minimum=0,
    )


def default_partial_convs(n: int) -> int:
    """``max(1, round(4 n / 17))``: ResNet-18's share (4 of its 17 main-path convolutions)
    on a model with ``n`` of them.
    """
    return max(1, round(4 * n / 17))


def split_convs(params: PartialConvsParams, layers: Sequence[Layer]) -> list[str]:
    """Names of the last ``c`` main-path convolutions (``c`` from ``partial_convs``, or
    the default share when it is 0); a ConfigError if the model has fewer than ``c``.
    """
    n = sum(1 for layer in layers if layer.kind == "conv" and not is_shortcut(layer))
    c = params.partial_convs or default_partial_convs(n)
    if c > n:
        raise ConfigError(
            f"--partial-convs must be at most the model's {n} main-path convolutions; got {c}"
        )
    return last_conv_layers(layers, c)


class SharedLayersAlgorithm(Algorithm):
    """Base of the fixed-subset methods: subclasses name the shared layers."""

    def __init__(self, params: Any, layers: Sequence[Layer], num_clusters: int) -> None:
        super().__init__(params, layers, num_clusters)
        self.shared = self.shared_layers()
        if not self.shared:
            raise ValueError(f"{self.name}: the model has no layer this method would share")

    def shared_layers(self) -> list[str]:
        """Names of the layers exchanged every round, in model order."""
        raise NotImplementedError

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """The cluster's shared layers."""
        return list(self.shared)

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """The shared layers."""
        return list(self.shared)

    def learngene_layers(self, cluster: int) -> list[str]:
        """A new client inherits the cluster's shared layers."""
        return list(self.shared)

    def allowed_upload_layers(self, cluster: int) -> set[str]:
        """Only the shared layers."""
        return set(self.shared)

    def kept_local(self, cluster: int) -> list[str]:
        """Every layer that is not shared."""
        shared = set(self.shared)
        return [name for name in self.all_layer_names if name not in shared]

    def summary(self) -> dict[str, Any]:
        """The shared layers."""
        return {"shared_layers": list(self.shared)}


class SplitAtLastConvs(SharedLayersAlgorithm):
    """ParFed and FedFina: the model split at its last ``c`` main-path convolutions."""

    params_cls = PartialConvsParams
    params: PartialConvsParams

    def __init__(
        self, params: PartialConvsParams, layers: Sequence[Layer], num_clusters: int
    ) -> None:
        #: the last ``c`` main-path convolutions (local in ParFed, the only shared in FedFina)
        self.last_convs = split_convs(params, layers)
        super().__init__(params, layers, num_clusters)

    def summary(self) -> dict[str, Any]:
        """The shared layers and the split's convolutions."""
        return {**super().summary(), "last_convs": list(self.last_convs)}
