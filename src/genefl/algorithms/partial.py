"""Methods that exchange one fixed subset of the layers (FedBN, ParFed, FedFina).

A participant downloads the cluster's values of the shared layers, keeps its own values of
the rest between rounds (the base :meth:`~genefl.algorithms.base.Algorithm.start_params`
overlays what it received on its own model), trains everything, and uploads the shared
layers; the server averages them per layer. A new client starts from the cluster's shared
layers and fresh weights elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from genefl.algorithms.base import Algorithm, ClientContext
from genefl.models.layers import Layer


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

    def download_layers(self, cluster: int) -> list[str]:
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

    def summary(self) -> dict[str, Any]:
        """The shared layers."""
        return {"shared_layers": list(self.shared)}
