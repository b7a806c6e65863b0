"""FedFina, as named in the GENE-FL paper: only the last ``c`` convolutions are shared.

The complement of ParFed (SPEC §7): a client uploads exactly the last ``c`` main-path
convolution layers (their weights) and keeps everything else local, with
``c = max(1, round(4 n / 17))`` of the model's ``n`` main-path convolutions or
``--partial-convs``. On ResNet-18 ``c = 4``: ``layer4``'s four 3x3 convolutions, 33,030,144
bytes, the paper's setting; on the 4-convolution small CNN ``c = 1``, its last
convolution. A new client inherits those layers and starts the rest fresh. The paper gives
no source; this follows its description ("incorporates rich information in the last four
convolution layers").
"""

from __future__ import annotations

from genefl.algorithms.partial import SplitAtLastConvs
from genefl.algorithms.registry import register


@register("fedfina")
class FedFina(SplitAtLastConvs):
    """Only the last ``c`` main-path convolutions are averaged."""

    exchanges = "partial model (the last c main-path convs)"
    initialises = "cluster partial model (the last c main-path convs)"

    def shared_layers(self) -> list[str]:
        """The last ``c`` main-path convolutions."""
        return list(self.last_convs)
