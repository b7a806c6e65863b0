"""One participant's side of a round, shared by the in-process engine and Flower.

:func:`client_update` is everything a client does between receiving the server's layers
and sending its upload: start model, local objective, local training, upload choice,
masks and its own evaluation. It is :func:`begin_update`, the local training and
:func:`finish_update`; the engine's batched mode trains several begun clients at once.
The :class:`~genefl.engine.rounds.Engine` and the Flower client app
(:mod:`genefl.flower`) both call these, so the two run the same work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from genefl.algorithms.base import (
    Algorithm,
    ClientContext,
    ClientData,
    LocalObjective,
    Upload,
)
from genefl.callbacks.base import ClientRoundRecord
from genefl.engine.local import LocalSettings, LocalStats, evaluate, train_local
from genefl.engine.wire import payload_bytes, select_layers
from genefl.models.layers import Layer, get_params, set_params
from genefl.seeding import numpy_rng, torch_generator
from genefl.types import ParamDict


def client_context(
    seed: int, client_id: int, cluster: int, rnd: int, phase: str,
    instructions: Mapping[str, Any], num_samples: int, state: dict[str, Any],
) -> ClientContext:
    """A client's context for one round, with its random streams named by
    ``(seed, round, client)`` (so every driver and worker draws the same numbers).
    """
    return ClientContext(
        client_id=client_id, cluster=cluster, round=rnd, phase=phase,
        instructions=instructions, num_samples=num_samples, state=state,
        generator=torch_generator(seed, "train", rnd, client_id),
        rng=numpy_rng(seed, "algorithm", rnd, client_id),
    )


@dataclass
class ClientUpdate:
    """Outcome of one client's round."""

    stats: LocalStats
    #: what the client sends (``None`` when training diverged: it sends nothing)
    upload: Upload | None
    #: the client's model after training, to keep for the next round (``None``: diverged,
    #: keep the previous one)
    after: ParamDict | None
    upload_bytes: int
    test_accuracy: float
    val_accuracy: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ClientStart:
    """A client ready to train: its model holds the start weights."""

    #: every tensor of the model before training
    before: ParamDict
    #: the method's extra loss terms and hooks (``None``: plain cross-entropy)
    objective: LocalObjective | None


def begin_update(
    algorithm: Algorithm,
    model: nn.Module,
    layers: Sequence[Layer],
    train: ClientData,
    received: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor] | None,
    initial: Mapping[str, torch.Tensor],
    ctx: ClientContext,
) -> ClientStart:
    """Load the start model into ``model`` and build the local objective."""
    start = algorithm.start_params(received, own, initial, ctx)
    set_params(model, start)
    before = get_params(model, layers)
    return ClientStart(before, algorithm.local_objective(model, train, received, ctx))


def finish_update(
    algorithm: Algorithm,
    model: nn.Module,
    layers: Sequence[Layer],
    layer_map: Mapping[str, Layer],
    val: ClientData,
    test: ClientData,
    begun: ClientStart,
    stats: LocalStats,
    ctx: ClientContext,
) -> ClientUpdate:
    """After local training (``model`` holds the trained weights): the after-training
    step, the upload choice and masks, and the client's own evaluation.
    """
    objective = begun.objective
    if objective is not None and not stats.diverged:
        objective.after_training(model)
    metrics = objective.metrics() if objective is not None else {}
    if stats.diverged:
        set_params(model, begun.before)
        nan = float("nan")
        return ClientUpdate(stats, None, None, 0, nan, nan, metrics)
    after = get_params(model, layers)
    up_layers = tuple(algorithm.select_upload(begun.before, after, ctx))
    payload = select_layers(after, layer_map, up_layers)
    masks = algorithm.upload_masks(up_layers, after, ctx)
    upload = Upload(ctx.client_id, ctx.cluster, up_layers, payload, ctx.num_samples, masks)
    return ClientUpdate(
        stats, upload, after, payload_bytes(payload, masks),
        evaluate(model, test.x, test.y), evaluate(model, val.x, val.y), metrics,
    )


def client_update(
    algorithm: Algorithm,
    model: nn.Module,
    layers: Sequence[Layer],
    layer_map: Mapping[str, Layer],
    train: ClientData,
    val: ClientData,
    test: ClientData,
    received: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor] | None,
    initial: Mapping[str, torch.Tensor],
    settings: LocalSettings,
    ctx: ClientContext,
) -> ClientUpdate:
    """Train one client from what it ``received`` and its ``own`` model (``None`` before
    its first round) and build its upload. ``model`` is used as scratch space; hooks may
    change ``ctx.state``, which the caller keeps with ``after``.
    """
    begun = begin_update(algorithm, model, layers, train, received, own, initial, ctx)
    stats = train_local(model, train, settings, begun.objective, ctx.generator)
    return finish_update(algorithm, model, layers, layer_map, val, test, begun, stats, ctx)


def client_drops_out(seed: int, rate: float, rnd: int, client_id: int) -> bool:
    """Whether the client fails mid-round in round ``rnd`` (``--dropout-rate``, drawn from
    its own stream, so the same on every driver).
    """
    if rate <= 0.0:
        return False
    return bool(numpy_rng(seed, "dropout", rnd, client_id).random() < rate)


def update_record(
    ctx: ClientContext, phase: str, result: ClientUpdate, down_bytes: int
) -> ClientRoundRecord:
    """The client-round record of a finished :func:`client_update`."""
    upload = result.upload
    return ClientRoundRecord(
        round=ctx.round, phase=phase, client_id=ctx.client_id, cluster=ctx.cluster,
        joined=False, num_train=ctx.num_samples, test_accuracy=result.test_accuracy,
        val_accuracy=result.val_accuracy, train_loss=result.stats.mean_loss,
        diverged=result.stats.diverged,
        upload_layers=upload.layers if upload is not None else (),
        upload_bytes=result.upload_bytes, download_bytes=down_bytes, init_bytes=0,
        metrics=result.metrics,
    )
