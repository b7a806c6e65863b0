"""GENE-FL (Guo, Lv, Wang, Geng: "GENE-FL: Gene-Driven Parameter-Efficient Dynamic
Federated Learning", 2025), as fixed by SPEC §2–§6.

Client (Algorithm 1): keep its own model ``theta_prev`` between rounds; compute the
Fisher diagonal at ``theta_prev``; train with ``L_cls + lambda1 L_gen + lambda2 L_elg``
where ``L_gen = sum_l ||theta_l - Theta_k,l||_2`` is a per-layer pull toward the cluster
model (Eq. 4, plain norms: every layer pulled with force ``lambda1``) and
``L_elg = ||1[F_hat > epsilon] * (theta - Theta_k)||_2`` pulls the high-Fisher entries
(``F_hat`` min-max normalised over the whole model, Eq. 6); then score each layer by how
little it moved and upload the top-``gamma`` layers (the client's learnGene). The squared
forms, a whole-model ``L_gen``, per-layer Fisher normalisation and an elastic pull on every
parameter (no Fisher mask, for the ablation) are options (``--gen-loss``, ``--elg-loss``,
``--fisher-norm``, ``--elg-mask``).

Server (Algorithm 2): average per layer over the uploads carrying it; lower ``gamma``
while validation accuracy holds (:class:`~genefl.method.condense.GammaSchedule`); the
cluster learnGene is the layers chosen by at least half of the cluster's last
participants. A new client gets the nearest cluster's learnGene and fresh weights
elsewhere (the engine does the matching by signature).

Choices made here beyond SPEC: the Fisher uses evaluation-mode normalisation; the gamma
schedule runs in the known phase and stays fixed in the agnostic phase; a cluster that
never had participants has an empty learnGene; the classifier head (last linear layer) is
never sent to a new client unless ``inherit_head`` (SPEC §5: "fresh random initialisation
for every other layer, the classifier head included") — neither in its init package nor
in any agnostic-phase download until the cluster's agnostic clients have uploaded a head
of their own (:class:`~genefl.algorithms.learngene.ClusterLearnGenes`).
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
from genefl.method.condense import (
    SCORE_MEASURES,
    GammaSchedule,
    budgeted_layers,
    layer_scores,
    top_layers,
)
from genefl.method.fisher import (
    fisher_diagonal,
    fisher_mask,
    minmax_normalise,
    minmax_normalise_per_layer,
)
from genefl.method.losses import (
    ELG_LOSSES,
    ELG_MASKS,
    GEN_LOSSES,
    elastic_loss,
    smooth_loss,
)
from genefl.models.layers import Layer, head_layer
from genefl.options import option


@dataclass(frozen=True)
class GeneFLParams:
    """GENE-FL's options (paper's best values as defaults)."""

    lambda1: float = option(0.5, "weight of the smooth loss L_gen", minimum=0)
    lambda2: float = option(0.05, "weight of the elastic Fisher loss L_elg", minimum=0)
    epsilon: float = option(0.5, "Fisher threshold on F_hat in [0, 1]", minimum=0, maximum=1)
    gen_loss: str = option(
        "layer-norm", "L_gen form: layer-norm = sum over layers of ||theta_l - Theta_l||_2 "
        "(Eq. 4), squared = sum_l ||.||^2 / numel(l), model-norm = one norm over the model",
        choices=GEN_LOSSES,
    )
    elg_loss: str = option(
        "norm", "L_elg form: norm = ||M * (theta - Theta)||_2, squared = its square",
        choices=ELG_LOSSES,
    )
    fisher_norm: str = option(
        "model", "Fisher min-max normalisation to F_hat: over the whole model (Eq. 6) or "
        "per layer", choices=("model", "layer"),
    )
    elg_mask: str = option(
        "fisher", "entries under the elastic pull L_elg: fisher = the high-Fisher entries "
        "1[F_hat > epsilon] (paper); all = every parameter, no Fisher computed (ablation: "
        "GENE-FL without the Fisher mask)", choices=ELG_MASKS,
    )
    layer_score: str = option(
        "paper", "layer score: paper = cos/numel (Eq. 9), cosine, l1, l2",
        choices=SCORE_MEASURES,
    )
    condense: str = option(
        "topk", "learnGene choice: top-gamma layers, or best layers within --upload-budget",
        choices=("topk", "budget"),
    )
    upload_budget: float = option(
        0.21, "budget mode: share of the model's bytes a learnGene may use",
        minimum=0, maximum=1, exclusive_min=True,
    )
    gamma_start: float = option(
        1.0, "gamma schedule: starting learnGene size, as a share of the layers",
        minimum=0, maximum=1, exclusive_min=True,
    )
    gamma_floor: float = option(
        0.25, "gamma schedule: smallest learnGene size, as a share of the layers",
        minimum=0, maximum=1, exclusive_min=True,
    )
    gamma_step: int = option(1, "gamma schedule: layers removed per successful round", minimum=0)
    gamma_tolerance: float = option(
        0.02, "gamma schedule: accuracy drop (fraction) still counted as holding",
        minimum=0, maximum=1,
    )
    gamma_patience: int = option(
        3, "gamma schedule: accuracy failures before gamma freezes", minimum=1
    )
    gamma_window: int = option(
        3, "gamma schedule: rounds of validation accuracy averaged before comparing", minimum=1
    )
    inherit_head: bool = option(
        False, "new clients also inherit the classifier head if it is in the learnGene "
        "(SPEC §5: by default the head is fresh, its classes are new)",
    )
    fisher_chunk: int = option(128, "samples per vectorised Fisher chunk", minimum=1)


def gamma_bounds(params: GeneFLParams, num_layers: int) -> tuple[int, int]:
    """The schedule's start and floor in layers: ``ceil(share * num_layers)``, at least 1,
    the floor never above the start.
    """
    start = max(1, math.ceil(params.gamma_start * num_layers))
    return start, min(start, max(1, math.ceil(params.gamma_floor * num_layers)))


class GeneFLObjective(LocalObjective):
    """``lambda1 L_gen + lambda2 L_elg`` around the received cluster model."""

    def __init__(
        self,
        anchor: Mapping[str, torch.Tensor],
        layer_groups: Sequence[Sequence[str]],
        masks: Mapping[str, torch.Tensor],
        lambda1: float,
        lambda2: float,
        constrained_share: float,
        gen_loss: str = "layer-norm",
        elg_loss: str = "norm",
    ) -> None:
        self.anchor = {k: v.detach() for k, v in anchor.items()}
        self.layer_groups = [list(g) for g in layer_groups]
        self.masks = dict(masks)
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.constrained_share = constrained_share
        self.gen_loss = gen_loss
        self.elg_loss = elg_loss
        self._last: dict[str, float] = {}

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """``lambda1 * L_gen + lambda2 * L_elg`` at the model's current parameters."""
        params = dict(model.named_parameters())
        gen = smooth_loss(params, self.anchor, self.layer_groups, self.gen_loss)
        elg = elastic_loss(params, self.anchor, self.masks, self.elg_loss)
        self._last = {"loss_gen": float(gen.detach()), "loss_elg": float(elg.detach())}
        return self.lambda1 * gen + self.lambda2 * elg

    def metrics(self) -> dict[str, float]:
        """Last loss components and the share of parameters under the elastic pull."""
        return {**self._last, "fisher_constrained_share": self.constrained_share}


@register("genefl")
class GeneFL(Algorithm):
    """GENE-FL: learnGene condensation, per-cluster aggregation, learnGene initialisation."""

    params_cls = GeneFLParams
    exchanges = "learnGene (top-gamma layers)"
    initialises = "cluster learnGene"
    params: GeneFLParams

    def __init__(self, params: GeneFLParams, layers: Sequence[Layer], num_clusters: int) -> None:
        super().__init__(params, layers, num_clusters)
        start, floor = gamma_bounds(params, len(self.layers))
        self.schedule = GammaSchedule(
            start, floor, params.gamma_step, params.gamma_tolerance,
            params.gamma_patience, params.gamma_window,
        )
        self.model_bytes = sum(layer.nbytes for layer in self.layers)
        self.learngenes = ClusterLearnGenes(
            self.all_layer_names, head_layer(self.layers), num_clusters
        )

    # -- server ------------------------------------------------------------------------
    def instructions(self, round: int, phase: str) -> dict[str, Any]:
        """Send the current ``gamma`` (learnGene size in layers)."""
        return {"gamma": self.schedule.gamma}

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """The cluster model (Algorithm 1), without the known classes' head in the
        agnostic phase unless ``inherit_head``.
        """
        return self.learngenes.downloadable(
            cluster, self.all_layer_names, phase, self.params.inherit_head
        )

    def end_round(self, report: RoundReport) -> None:
        """Remember each cluster's choices; move the gamma schedule (known phase)."""
        self.learngenes.record(report)
        if report.phase == "known":
            self.schedule.update(report.val_accuracy)

    def cluster_learngene(self, cluster: int) -> list[str]:
        """Layers chosen by at least half of the cluster's last participants (SPEC §4)."""
        return self.learngenes.layers(cluster)

    def learngene_layers(self, cluster: int) -> list[str]:
        """What a new client downloads: the cluster learnGene, without the classifier head
        unless ``inherit_head`` (a new client's classes are new, SPEC §5).
        """
        return self.learngenes.package(cluster, self.params.inherit_head)

    def summary(self) -> dict[str, Any]:
        """Gamma schedule state and each cluster's learnGene layers."""
        return {"gamma": self.schedule.state_dict(), **self.learngenes.summary()}

    def state_dict(self) -> dict[str, Any]:
        """Gamma schedule and cluster learnGenes."""
        return {"gamma": self.schedule.state_dict(), "learngenes": self.learngenes.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.schedule.load_state_dict(state["gamma"])
        self.learngenes.load_state_dict(state["learngenes"])

    # -- client ------------------------------------------------------------------------
    def start_params(
        self,
        received: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor] | None,
        initial: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> dict[str, torch.Tensor]:
        """Keep the client's own model; a first-time client starts from the cluster's."""
        if own is not None:
            return dict(own)
        return super().start_params(received, None, initial, ctx)

    def local_objective(
        self,
        model: nn.Module,
        data: ClientData,
        received: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> LocalObjective:
        """Fisher mask at ``theta_prev`` (the start model) and the two regularisers."""
        p = self.params
        groups = [list(layer.param_names) for layer in self.layers]
        every = self._elastic_masks(model, data, groups)
        total = sum(m.numel() for m in every.values())
        constrained = sum(float(m.sum()) for m in every.values())
        masks = {k: m for k, m in every.items() if k in received and bool(m.any())}
        groups = [[n for n in g if n in received] for g in groups]
        groups = [g for g in groups if g]
        anchor = {k: v for k, v in received.items() if k in every}
        return GeneFLObjective(
            anchor, groups, masks, p.lambda1, p.lambda2, constrained / max(total, 1),
            p.gen_loss, p.elg_loss,
        )

    def _elastic_masks(
        self, model: nn.Module, data: ClientData, groups: Sequence[Sequence[str]]
    ) -> dict[str, torch.Tensor]:
        """``M`` per trainable parameter: ``1[F_hat > epsilon]`` from the Fisher at the
        start model, or all ones (``elg_mask="all"``, the Fisher is then not computed).
        """
        p = self.params
        if p.elg_mask == "all":
            return {
                n: torch.ones_like(t.detach()) for n, t in model.named_parameters()
                if t.requires_grad
            }
        fisher = fisher_diagonal(model, data.x, data.y, chunk_size=p.fisher_chunk)
        if p.fisher_norm == "layer":
            fisher_hat = minmax_normalise_per_layer(fisher, groups)
        else:
            fisher_hat = minmax_normalise(fisher)
        return fisher_mask(fisher_hat, p.epsilon)

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """The learnGene: layers that moved least, top-``gamma`` or within the budget."""
        scores = layer_scores(before, after, self.layer_params(), self.params.layer_score)
        if self.params.condense == "budget":
            sizes = {layer.name: layer.nbytes for layer in self.layers}
            budget = int(self.params.upload_budget * self.model_bytes)
            return budgeted_layers(scores, sizes, budget)
        return top_layers(scores, int(ctx.instructions["gamma"]))
