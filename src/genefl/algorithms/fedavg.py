"""FedAvg (McMahan et al., AISTATS 2017), run per cluster.

Each participant downloads its cluster's whole model, trains it, and uploads the whole
model; the server averages per layer. A new client starts from the cluster model.
Every hook is the :class:`~genefl.algorithms.base.Algorithm` default.
"""

from __future__ import annotations

from genefl.algorithms.base import Algorithm
from genefl.algorithms.registry import register


@register("fedavg")
class FedAvg(Algorithm):
    """Full-model exchange and per-cluster averaging."""

    exchanges = "full model"
    initialises = "cluster model"
