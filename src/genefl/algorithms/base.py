"""The one interface every federated algorithm implements.

The engine (``genefl.engine``) owns the round loop, the local training loop, the client
store and the wire; an algorithm only says what differs from FedAvg through the hooks
below. Client-side hooks see only what a real client would (its own data and model, what
the server sent, the server's instructions), so the same object runs in simulation and
on Flower.

Round, for a participant ``i`` of cluster ``k``::

    server: instructions(), download_layers(k, phase) -> received (wire)
    client: start_params(received, own, initial)      -> start model
            local_objective(model, data, received)    -> extra loss terms / hooks
            [engine's local training loop]
            select_upload(start, trained)             -> upload layers (wire)
            upload_masks(layers, trained)             -> partial tensors, if any
    server: aggregate(k, cluster model, uploads)      -> new cluster model
            end_round(report)
    join:   learngene_layers(k) -> package; init_new_client(fresh, package)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from genefl.method.aggregate import average_layers
from genefl.models.layers import Layer
from genefl.types import ParamDict


@dataclass(frozen=True)
class NoParams:
    """An algorithm without options."""


@dataclass
class ClientContext:
    """What a client knows while it runs one round."""

    client_id: int
    cluster: int
    round: int
    phase: str  # "known" or "agnostic"
    instructions: Mapping[str, Any]
    num_samples: int
    #: Persistent per-client extras (tensors, numbers) kept by the engine's store.
    state: dict[str, Any]
    generator: torch.Generator
    rng: np.random.Generator


@dataclass(frozen=True)
class ClientData:
    """A client's samples on the training device: labels ``y`` ``(n,)`` and images.

    Either ``images`` holds the samples themselves as float ``(n, C, H, W)`` (``index``
    ``None``), or it is the data set's shared buffer of stored images (``uint8``
    ``(N, C, H, W)``, one for every client) and ``index`` ``(n,)`` picks this client's
    rows: a batch is gathered and converted to ``(pixels / scale - mean) / std`` only
    when asked for (:meth:`rows`), so no client holds a float copy of its data.
    """

    images: torch.Tensor
    y: torch.Tensor
    #: rows of ``images`` that are this client's samples (``None``: all of them, as stored)
    index: torch.Tensor | None = None
    #: per-channel mean and std ``(1, C, 1, 1)`` of the pixels in ``[0, 1]``
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    #: the stored value of a white pixel (255 for ``uint8`` images)
    scale: float = 255.0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, positions: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Float model inputs ``(len(positions), C, H, W)`` of the samples at
        ``positions`` (``None``: every sample), converted on the data's device.
        """
        if self.index is None and self.mean is None:
            return self.images if positions is None else self.images[positions]
        rows = self.index if positions is None else self.index[positions]
        x = (self.images if rows is None else self.images.index_select(0, rows)).float()
        x = x.div_(self.scale)
        if self.mean is not None and self.std is not None:
            x = x.sub_(self.mean).div_(self.std)
        return x

    @property
    def x(self) -> torch.Tensor:
        """Every sample as float model inputs ``(n, C, H, W)`` (a new tensor unless the
        samples are stored as such).
        """
        return self.rows()


@dataclass(frozen=True)
class Upload:
    """What one client sent the server in one round."""

    client_id: int
    cluster: int
    layers: tuple[str, ...]
    params: ParamDict
    num_samples: int
    #: tensor name -> bool mask of the entries sent, for partially sent tensors (pruning)
    masks: Mapping[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class RoundReport:
    """The server's view of a finished round, passed to :meth:`Algorithm.end_round`."""

    round: int
    phase: str
    uploads: Sequence[Upload]
    #: sample-weighted validation accuracy of the participants, in [0, 1] (NaN if none)
    val_accuracy: float
    #: per-cluster layer names chosen by each participant
    chosen: dict[int, list[tuple[str, ...]]] = field(default_factory=dict)


class LocalObjective:
    """Extra behaviour of one client's local training; the default adds nothing."""

    #: names of parameters kept frozen during local training
    frozen: frozenset[str] = frozenset()

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """Extra loss added to the cross-entropy at every step (or ``None``)."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called after each backward pass, before the optimiser step."""

    def after_training(self, model: nn.Module) -> None:
        """Called once after the local epochs, before the upload is chosen; may change
        the model in place (e.g. prune it).
        """

    def metrics(self) -> dict[str, float]:
        """Numbers to log for this client-round (e.g. loss components)."""
        return {}


class Algorithm:
    """Base algorithm: every hook defaults to FedAvg's behaviour.

    Subclasses set ``name``, ``exchanges`` (what a client uploads, for tables),
    ``initialises`` (what a new client starts from) and, if they have options, a frozen
    dataclass ``params_cls``.
    """

    name: ClassVar[str] = "base"
    params_cls: ClassVar[type] = NoParams
    exchanges: ClassVar[str] = "full model"
    initialises: ClassVar[str] = "cluster model"

    def __init__(self, params: Any, layers: Sequence[Layer], num_clusters: int) -> None:
        self.params = params
        self.layers = list(layers)
        self.layer_by_name = {layer.name: layer for layer in self.layers}
        self.num_clusters = num_clusters
        self.aggregate_weighting = "uniform"

    # -- helpers ---------------------------------------------------------------------
    @property
    def all_layer_names(self) -> list[str]:
        """Every layer name in model order."""
        return [layer.name for layer in self.layers]

    def layer_params(self) -> dict[str, tuple[str, ...]]:
        """Layer name -> its parameter tensor names (buffers excluded)."""
        return {layer.name: layer.param_names for layer in self.layers}

    # -- server side -----------------------------------------------------------------
    def instructions(self, round: int, phase: str) -> dict[str, Any]:
        """Numbers the server sends every participant this round (e.g. ``gamma``)."""
        return {}

    def download_layers(self, cluster: int, phase: str) -> list[str]:
        """Layers of the cluster model sent to a participant at the start of a round of
        ``phase`` ("known" or "agnostic").
        """
        return self.all_layer_names

    def aggregate(
        self, cluster: int, current: Mapping[str, torch.Tensor], uploads: Sequence[Upload]
    ) -> ParamDict:
        """New cluster model: per-layer mean over the uploads carrying each layer."""
        weights = None
        if self.aggregate_weighting == "samples":
            weights = [float(u.num_samples) for u in uploads]
        return average_layers(
            current, [u.params for u in uploads], weights, [u.masks for u in uploads]
        )

    def end_round(self, report: RoundReport) -> None:
        """Update server-side state after aggregation (schedules, statistics)."""

    def learngene_layers(self, cluster: int) -> list[str]:
        """Layers of the cluster model that a new client downloads to initialise."""
        return self.all_layer_names

    def summary(self) -> dict[str, Any]:
        """Server-side figures to report at the end of a run."""
        return {}

    def allowed_upload_layers(self, cluster: int) -> set[str]:
        """Layers a client of ``cluster`` may upload; the server rejects any other."""
        return set(self.all_layer_names)

    def kept_local(self, cluster: int) -> list[str]:
        """Layers the method keeps on the client by design (never exchanged, whatever
        happens in training): the server view of a client's accuracy takes the client's
        own values for these and the server's cluster model for every other layer.
        Default: none (layers a method chooses round by round, like GENE-FL's, are not
        local by design).
        """
        return []

    def state_dict(self) -> dict[str, Any]:
        """Server-side state to checkpoint (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # -- client side -----------------------------------------------------------------
    def start_params(
        self,
        received: Mapping[str, torch.Tensor],
        own: Mapping[str, torch.Tensor] | None,
        initial: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> ParamDict:
        """The model a client trains from: its own (or the initial) overlaid with what it
        received.
        """
        base = dict(own if own is not None else initial)
        base.update(received)
        return base

    def local_objective(
        self,
        model: nn.Module,
        data: ClientData,
        received: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> LocalObjective | None:
        """Extra loss terms and hooks for this client's local training."""
        return None

    def select_upload(
        self,
        before: Mapping[str, torch.Tensor],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> list[str]:
        """Names of the layers this client uploads after training."""
        return self.all_layer_names

    def upload_masks(
        self,
        layers: Sequence[str],
        after: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> dict[str, torch.Tensor]:
        """Tensor name -> bool mask for tensors of ``layers`` sent only in part (default:
        none, every uploaded tensor is sent whole).
        """
        return {}

    def init_new_client(
        self,
        fresh: Mapping[str, torch.Tensor],
        package: Mapping[str, torch.Tensor],
        ctx: ClientContext,
    ) -> ParamDict:
        """A new client's model: fresh random weights overlaid with the package."""
        base = dict(fresh)
        base.update(package)
        return base
