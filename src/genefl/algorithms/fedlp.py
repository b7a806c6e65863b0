"""FedLP (Zhu, Zhang, Zhang, Li, Xu: "FedLP: Layer-wise Pruning Mechanism for
Communication-Computation Efficient Federated Learning", ICC 2023; code ``Zhuzzq/FedLP``,
``models/Fed.py``), homogeneous variant, run per cluster.

Each participant downloads the whole cluster model and trains it; then every layer is
kept independently with probability ``fedlp_keep_prob`` (p = 0.5), a fresh draw per
client per round, and only the kept layers are uploaded. The server averages each layer
over the clients that kept it (SPEC §7: unweighted, so ``--aggregate-weighting`` should
stay ``uniform``); a layer nobody kept keeps its value. A new client starts from the
cluster's full model. The draw uses the client-round's own random stream, so it does not
depend on which other clients take part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from genefl.algorithms.base import Algorithm, ClientContext
from genefl.algorithms.registry import register
from genefl.options import option


@dataclass(frozen=True)
class FedLPParams:
    """FedLP's option."""

    fedlp_keep_prob: float = option(
        0.5, "FedLP: probability that a client uploads each layer", minimum=0, maximum=1,
        exclusive_min=True,
    )


@register("fedlp")
class FedLP(Algorithm):
    """Layer-wise random pruning of the upload."""

    params_cls = FedLPParams
    exchanges = "pruned model (each layer kept w.p. p)"
    initialises = "cluster full model"
    params: FedLPParams

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """Each layer independently with probability ``fedlp_keep_prob``."""
        keep = ctx.rng.random(len(self.layers)) < self.params.fedlp_keep_prob
        return [name for name, k in zip(self.all_layer_names, keep) if k]
