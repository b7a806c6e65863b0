"""FedFina, as named in the GENE-FL paper: only the last four convolutions are shared.

The complement of ParFed (SPEC §7): a client uploads exactly the last four main-path
convolution layers (their weights; on ResNet-18, ``layer4``'s four 3x3 convolutions,
33,030,144 bytes) and keeps everything else local. A new client inherits those four
layers and starts the rest fresh. The paper gives no source; this follows its description
("incorporates rich information in the last four convolution layers").
"""

from __future__ import annotations

from genefl.algorithms.parfed import LAST_CONVS
from genefl.algorithms.partial import SharedLayersAlgorithm
from genefl.algorithms.registry import register
from genefl.models.layers import last_conv_layers


@register("fedfina")
class FedFina(SharedLayersAlgorithm):
    """Only the last four convolutions are averaged."""

    exchanges = "partial model (last 4 convs)"
    initialises = "cluster partial model (last 4 convs)"

    def shared_layers(self) -> list[str]:
        """The last four main-path convolutions."""
        return last_conv_layers(self.layers, LAST_CONVS)
