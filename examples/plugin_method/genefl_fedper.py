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

from dataclasses import dataclass

from genefl.algorithms.partial import SharedLayersAlgorithm
from genefl.errors import ConfigError
from genefl.options import option


@dataclass(frozen=True)
class FedPerParams:
    """FedPer's option (an option of the CLI: ``--fedper-local-layers``)."""

    fedper_local_layers: int = option(
        1, "FedPer: last layers kept on each client (personalisation layers)", minimum=1
    )


class FedPer(SharedLayersAlgorithm):
    """The base layers are averaged per cluster; the last layers stay on each client.

    :class:`~genefl.algorithms.partial.SharedLayersAlgorithm` does the rest: it downloads,
    uploads, accepts and passes on to new clients exactly the shared layers, and keeps the
    others local (the server view completes them with the client's own values).
    """

    params_cls = FedPerParams
    params: FedPerParams
    exchanges = "base layers (all but the personal ones)"
    initialises = "cluster base (personal layers fresh)"

    def shared_layers(self) -> list[str]:
        """Every layer but the last ``fedper_local_layers``."""
        local = self.params.fedper_local_layers
        if local >= len(self.layers):
            raise ConfigError(
                f"--fedper-local-layers must be below the model's {len(self.layers)} layers; "
                f"got {local}"
            )
        return self.all_layer_names[:-local]
