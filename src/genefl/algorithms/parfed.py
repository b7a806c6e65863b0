"""ParFed: PartialFed with its fixed strategy (Sun, Chen, Zhu, Tian, Wang: "PartialFed:
Cross-Domain Personalized Federated Learning via Partial Initialization", NeurIPS 2021).

Exchanges every layer except the last four main-path convolutions, which stay local
(SPEC §7; on ResNet-18 those are ``layer4``'s convolutions, so the shortcut projection is
shared). Each round a client starts from the cluster's values of the shared layers and its
own for the rest; a new client inherits the shared part (the paper's "cluster partial
model").
"""

from __future__ import annotations

from genefl.algorithms.partial import SharedLayersAlgorithm
from genefl.algorithms.registry import register
from genefl.models.layers import last_conv_layers

#: how many trailing convolutions stay local (ParFed) or are the only ones shared (FedFina)
LAST_CONVS = 4


@register("parfed")
class ParFed(SharedLayersAlgorithm):
    """Everything but the last four convolutions is averaged."""

    exchanges = "partial model (all but last 4 convs)"
    initialises = "cluster partial model"

    def shared_layers(self) -> list[str]:
        """Every layer except the last four main-path convolutions."""
        local = set(last_conv_layers(self.layers, LAST_CONVS))
        return [layer.name for layer in self.layers if layer.name not in local]
