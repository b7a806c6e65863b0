"""FedLG: a learnGene chosen from gradient information (after Learngene, Wang, Gao, Yang,
Geng: "Learngene: From Open-World to Your Learning Task", AAAI 2022, gradient criterion),
in the form the GENE-FL paper compares against (SPEC §7 decision).

During local training a client measures, for every layer, its *gradient activity*: the
share of the layer's gradient entries with ``|g| > fedlg_threshold`` (5e-4), averaged over
the local steps. Its learnGene is the fixed share ``fedlg_fraction`` of the layers whose
activity changed least since its previous round (on its first round, with no previous
measurement, the least active layers); it uploads only those. The server averages per
layer and keeps, per cluster, the layers chosen by at least half of the last participants
(as GENE-FL); each participant downloads that cluster learnGene onto its own model, and a
new client inherits it without the classifier head (as GENE-FL, SPEC §5); in the agnostic
phase no download carries the known classes' head (the head a joiner starts with stays
its own fresh one until agnostic clients have aggregated theirs).

Choices: the default size, 0.25 of the layers, equals GENE-FL's ``--gamma-floor``, so both
learnGene methods may send equally many layers and differ in how they choose them; no
extra loss terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genefl.algorithms.base import (
    Algorithm,
    ClientContext,
    ClientData,
    LocalObjective,
    RoundReport,
)
from genefl.algorithms.learngene import ClusterLearnGenes
from genefl.algorithms.registry import register
from genefl.models.layers import Layer, head_layer
from genefl.options import option

ACTIVITY = "grad_activity"
PREVIOUS = "grad_activity_previous"


@dataclass(frozen=True)
class FedLGParams:
    """FedLG's options."""

    fedlg_fraction: float = option(
        0.25, "FedLG: learnGene size as a share of the layers", minimum=0, maximum=1,
        exclusive_min=True,
    )
    fedlg_threshold: float = option(
        5e-4, "FedLG: |gradient| above which an entry counts as active", minimum=0
    )


def gradient_activity(
    grads: Mapping[str, torch.Tensor | None], layers: Sequence[Layer], threshold: float
) -> list[float]:
    """Per layer, the share of its parameters' gradient entries with ``|g| > threshold``
    (a layer without gradients counts 0).
    """
    out = []
    for layer in layers:
        active = total = 0
        for name in layer.param_names:
            g = grads.get(name)
            total += layer.param_numel if g is None else 0
            if g is not None:
                active += int((g.abs() > threshold).sum())
                total += g.numel()
        out.append(active / total if total else 0.0)
    return out


class GradientActivityMeter(LocalObjective):
    """Averages :func:`gradient_activity` over the local steps."""

    def __init__(self, layers: Sequence[Layer], threshold: float, state: dict[str, Any]) -> None:
        self.layers = list(layers)
        self.threshold = threshold
        self.state = state
        self.sums = [0.0] * len(self.layers)
        self.steps = 0

    def after_backward(self, model: nn.Module) -> None:
        """Add this step's activity."""
        grads = {n: p.grad for n, p in model.named_parameters()}
        for i, a in enumerate(gradient_activity(grads, self.layers, self.threshold)):
            self.sums[i] += a
        self.steps += 1

    def after_training(self, model: nn.Module) -> None:
        """Store this round's mean activity, keeping the previous one."""
        if ACTIVITY in self.state:
            self.state[PREVIOUS] = self.state[ACTIVITY]
        self.state[ACTIVITY] = [s / max(self.steps, 1) for s in self.sums]

    def metrics(self) -> dict[str, float]:
        """Mean activity over layers this round."""
        return {"grad_activity": sum(self.sums) / max(self.steps, 1) / len(self.layers)}


@register("fedlg")
class FedLG(Algorithm):
    """Learngene by gradient stability."""

    params_cls = FedLGParams
    exchanges = "learnGene (gradient criterion)"
    initialises = "cluster learnGene"
    params: FedLGParams

    def __init__(self, params: FedLGParams, layers: Sequence[Layer], num_clusters: int) -> None:
        super().__init__(params, layers, num_clusters)
        self.size = max(1, math.ceil(params.fedlg_fraction * len(self.layers)))
        self.learngenes = ClusterLearnGenes(
            self.all_layer_names, head_layer(self.layers), num_clusters
        )

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """The cluster learnGene; in the agnostic phase without the known classes' head."""
        return self.learngenes.downloadable(
            cluster, self.learngenes.layers(cluster), phase, inherit_head=False
        )

    def end_round(self, report: RoundReport) -> None:
        """Remember each cluster's choices."""
        self.learngenes.record(report)

    def learngene_layers(self, cluster: int) -> list[str]:
        """The cluster learnGene without the classifier head."""
        return self.learngenes.package(cluster, inherit_head=False)

    def summary(self) -> dict[str, Any]:
        """Each cluster's learnGene layers."""
        return {"learngene_size_layers": self.size, **self.learngenes.summary()}

    def state_dict(self) -> dict[str, Any]:
        """Cluster learnGenes."""
        return {"learngenes": self.learngenes.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.learngenes.load_state_dict(state["learngenes"])

    def local_objective(
        self,
        model: nn.Module,
        data: ClientData,
        received: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> LocalObjective:
        """Measure gradient activity during training."""
        return GradientActivityMeter(self.layers, self.params.fedlg_threshold, ctx.state)

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """The ``size`` layers whose activity changed least (ties: model order)."""
        current = ctx.state[ACTIVITY]
        previous = ctx.state.get(PREVIOUS, [0.0] * len(current))
        change = [abs(c - p) for c, p in zip(current, previous)]
        order = sorted(range(len(change)), key=lambda i: (change[i], i))[: self.size]
        return [self.all_layer_names[i] for i in sorted(order)]
