"""FedBN (Li, Jiang, Zhang, Kamp, Dou: "FedBN: Federated Learning on Non-IID Features via
Local Batch Normalization", ICLR 2021), run per cluster.

Exchanges every layer except the normalisation layers, whose weights and running
statistics stay local. A new client inherits the cluster model without its normalisation
layers (which nobody ever aggregated) and starts those fresh. Nothing to choose beyond
SPEC §7.
"""

from __future__ import annotations

from genefl.algorithms.partial import SharedLayersAlgorithm
from genefl.algorithms.registry import register


@register("fedbn")
class FedBN(SharedLayersAlgorithm):
    """Everything but normalisation layers is averaged."""

    exchanges = "all but normalisation layers"
    initialises = "cluster model without normalisation layers"

    def shared_layers(self) -> list[str]:
        """Every non-normalisation layer."""
        return [layer.name for layer in self.layers if layer.kind != "norm"]
