"""FedLPS (Jia, Zhang, Zhu, Li, Xu: "FedLPS: Heterogeneous Federated Learning for Multiple
Tasks with Local Parameter Sharing", AAAI 2024; code ``jyzgh/FedLPS``), homogeneous
single-ratio variant, run per cluster (SPEC §7, revised decision).

The first half of the layers (split after a conv's norm layer, see
:func:`~genefl.models.layers.encoder_split`) is a shared encoder; the rest is the
predictor. Each round a client downloads the whole cluster model, trains encoder and
predictor, and uploads the encoder whole and only the surviving channels of its pruned
predictor; the server averages each layer (each predictor entry) over the clients that
sent it, as FedAvg does.

The first time a client takes part it prunes the predictor it starts from, once and
structurally: each conv/linear layer of the predictor (the classifier head excepted) keeps
the ``1 - fedlps_prune_ratio`` share of its output channels with the largest L1 norm (the
reference code's ``prune_prob`` is the share *pruned*; 0.8 keeps 20 %). Pruned entries
stay zero (their gradients are masked) and are neither sent nor counted.

Choices (SPEC §7):

- The encoder is trained and shared. The reference code freezes it because it starts
  from an ImageNet-pretrained backbone; this protocol trains from scratch, where a frozen
  encoder stays at its shared random initialisation (measured on digits: new clients at
  0 % accuracy in their first round, ~30 % later, everything predicted as one class).
  ``fedlps_freeze_encoder`` restores the reference behaviour for pretrained starts: the
  encoder's parameters are then neither trained nor sent (its normalisation statistics
  still adapt locally, as in the reference code), and only the predictor is downloaded.
- The mask is taken from the model the client starts from, before its first local
  training ("pruned once ... and trained"), so no accuracy is ever measured on a freshly
  pruned, untrained model.
- A pruned channel is zeroed (masked), not removed, so the inputs a later layer takes
  from it are still sent whole (a residual connection may feed them); the mask is fixed
  per client and not counted on the wire.
- A new client starts from the full cluster model and prunes it likewise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genefl.algorithms.base import Algorithm, ClientContext, ClientData, LocalObjective
from genefl.algorithms.registry import register
from genefl.method.prune import channel_masks, prunable_groups
from genefl.models.layers import Layer, encoder_split, head_layer
from genefl.options import option
from genefl.types import ParamDict

MASKS = "prune_masks"


@dataclass(frozen=True)
class FedLPSParams:
    """FedLPS's option."""

    fedlps_prune_ratio: float = option(
        0.8, "FedLPS: share of each predictor layer's output channels pruned (L1 norm)",
        minimum=0, maximum=1, exclusive_max=True,
    )
    fedlps_freeze_encoder: bool = option(
        False, "FedLPS: freeze the encoder (first half of the layers) and never send it, as "
        "the reference code does with a pretrained backbone; off: trained and averaged",
    )


class PrunedPredictorObjective(LocalObjective):
    """The gradients of pruned entries are zeroed, so they stay zero; ``frozen`` (the
    encoder's parameters when it is frozen, else empty) are not trained.
    """

    def __init__(self, frozen: frozenset[str], masks: Mapping[str, torch.Tensor]) -> None:
        self.frozen = frozen
        self.masks = dict(masks)

    def after_backward(self, model: nn.Module) -> None:
        """Zero the gradients of pruned entries."""
        for name, param in model.named_parameters():
            if param.grad is not None and name in self.masks:
                param.grad.mul_(self.masks[name])

    def metrics(self) -> dict[str, float]:
        """Share of the masked entries that survive."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(float(m.sum()) for m in self.masks.values())
        return {"kept_share": kept / total} if total else {}


@register("fedlps")
class FedLPS(Algorithm):
    """Shared encoder (trained, or frozen as an option), pruned predictor, partial-channel
    uploads.
    """

    params_cls = FedLPSParams
    exchanges = "encoder + pruned predictor channels"
    initialises = "cluster full model"
    params: FedLPSParams

    def __init__(self, params: FedLPSParams, layers: Sequence[Layer], num_clusters: int) -> None:
        super().__init__(params, layers, num_clusters)
        split = encoder_split(self.layers)
        self.encoder = [layer.name for layer in self.layers[:split]]
        self.predictor = [layer.name for layer in self.layers[split:]]
        if not self.predictor:
            raise ValueError("fedlps: the model is too small to split into encoder and predictor")
        self.frozen: frozenset[str] = frozenset()
        if params.fedlps_freeze_encoder:
            self.frozen = frozenset(
                n for layer in self.layers[:split] for n in layer.param_names
            )
        #: the layers exchanged every round: the predictor, and the encoder unless frozen
        self.shared = self.predictor if self.frozen else self.encoder + self.predictor
        self.groups = prunable_groups(self.layers[split:], exclude=(head_layer(self.layers),))

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """The cluster's encoder and predictor (only the predictor if the encoder is
        frozen: it never changes).
        """
        return list(self.shared)

    def allowed_upload_layers(self, cluster: int) -> set[str]:
        """Encoder and predictor (only the predictor if the encoder is frozen)."""
        return set(self.shared)

    def summary(self) -> dict[str, Any]:
        """Encoder and predictor layers, and whether the encoder is frozen."""
        return {
            "encoder_layers": self.encoder, "predictor_layers": self.predictor,
            "encoder_frozen": bool(self.frozen),
        }

    def start_params(
        self,
        received: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor] | None,
        initial: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> ParamDict:
        """The cluster's encoder (own if frozen) and predictor, with the client's pruning
        mask applied (made here, from these values, the first time).
        """
        params = super().start_params(received, own, initial, ctx)
        if not ctx.state.get(MASKS):
            ctx.state[MASKS] = channel_masks(params, self.groups, self.params.fedlps_prune_ratio)
        for name, mask in ctx.state[MASKS].items():
            params[name] = params[name] * mask
        return params

    def local_objective(
        self,
        model: nn.Module,
        data: ClientData,
        received: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> LocalObjective:
        """Keep pruned entries at zero (and the encoder fixed, if frozen)."""
        return PrunedPredictorObjective(self.frozen, ctx.state[MASKS])

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """The encoder whole (unless frozen) and the predictor's surviving channels (see
        :meth:`upload_masks`).
        """
        return list(self.shared)

    def upload_masks(
        self,
        layers: Sequence[str],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> dict[str, torch.Tensor]:
        """The client's pruning mask for the uploaded tensors."""
        return dict(ctx.state.get(MASKS, {}))
