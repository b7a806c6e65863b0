"""Local: the no-federation control (not in the paper).

Every client trains alone from the shared initial weights and keeps its own model;
nothing is downloaded or uploaded, and a new client starts from fresh random weights.
It shows how much of any method's accuracy is mere personalisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from genefl.algorithms.base import Algorithm, ClientContext
from genefl.algorithms.registry import register


@register("local")
class Local(Algorithm):
    """No exchange at all."""

    exchanges = "nothing"
    initialises = "random weights"

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """Nothing is sent to clients."""
        return []

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """Nothing is uploaded."""
        return []

    def allowed_upload_layers(self, cluster: int) -> set[str]:
        """Nothing may be uploaded."""
        return set()

    def learngene_layers(self, cluster: int) -> list[str]:
        """A new client receives nothing."""
        return []

    def kept_local(self, cluster: int) -> list[str]:
        """Everything: the server view is the client's own model."""
        return self.all_layer_names
