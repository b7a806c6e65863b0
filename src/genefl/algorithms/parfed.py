"""ParFed: PartialFed with its fixed strategy (Sun, Chen, Zhu, Tian, Wang: "PartialFed:
Cross-Domain Personalized Federated Learning via Partial Initialization", NeurIPS 2021).

Exchanges every layer except the last ``c`` main-path convolutions, which stay local
(SPEC §7: ``c = max(1, round(4 n / 17))`` of the model's ``n`` main-path convolutions, or
``--partial-convs``; on ResNet-18 ``c = 4``, ``layer4``'s convolutions, and its shortcut
projection is shared; on the small CNN ``c = 1``, its last convolution). Each round a
client starts from the cluster's values of the shared layers and its own for the rest; a
new client inherits the shared part (the paper's "cluster partial model").
"""

from __future__ import annotations

from genefl.algorithms.partial import SplitAtLastConvs
from genefl.algorithms.registry import register


@register("parfed")
class ParFed(SplitAtLastConvs):
    """Everything but the last ``c`` main-path convolutions is averaged."""

    exchanges = "partial model (all but the last c main-path convs)"
    initialises = "cluster partial model"

    def shared_layers(self) -> list[str]:
        """Every layer except the last ``c`` main-path convolutions."""
        local = set(self.last_convs)
        return [layer.name for layer in self.layers if layer.name not in local]
