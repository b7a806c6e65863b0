"""FedPer as a genefl plugin (Arivazhagan, Aggarwal, Singh, Choudhary: "Federated Learning
with Personalization Layers", arXiv:1912.00818, 2019).

Clients share the base layers and keep their personalisation layers, the last
``fedper_local_layers`` layers (default 1: the classifier head), to themselves. The server
averages the base per cluster (genefl's clustering, as for every method); a new client
starts from its cluster's base with fresh personal layers.

Once this package is installed, genefl finds the class through the entry point in
pyproject.toml: ``genefl compare --methods fedavg,fedper``, ``genefl run --method fedper
--fedper-local-layers 2``; ``genefl methods`` lists it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from genefl.algorithms.base import Algorithm, ClientContext
from genefl.errors import ConfigError
from genefl.models.layers import Layer
from genefl.options import option


@dataclass(frozen=True)
class FedPerParams:
    """FedPer's option (an option of the CLI: ``--fedper-local-layers``)."""

    fedper_local_layers: int = option(
        1, "FedPer: last layers kept on each client (personalisation layers)", minimum=1
    )


class FedPer(Algorithm):
    """The base layers are averaged per cluster; the last layers stay on each client."""

    params_cls = FedPerParams
    exchanges = "base layers (all but the personal ones)"
    initialises = "cluster base (personal layers fresh)"

    def __init__(self, params: FedPerParams, layers: Sequence[Layer], num_clusters: int) -> None:
        super().__init__(params, layers, num_clusters)
        local = params.fedper_local_layers
        if local >= len(self.layers):
            raise ConfigError(
                f"--fedper-local-layers must be below the model's {len(self.layers)} layers; "
                f"got {local}"
            )
        #: the layers exchanged, in model order
        self.base = self.all_layer_names[:-local]

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """The cluster's base; a client keeps its own personal layers."""
        return list(self.base)

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """The base layers."""
        return list(self.base)

    def allowed_upload_layers(self, cluster: int) -> set[str]:
        """Only the base layers (the server rejects anything else)."""
        return set(self.base)

    def learngene_layers(self, cluster: int) -> list[str]:
        """A new client inherits the cluster's base."""
        return list(self.base)
