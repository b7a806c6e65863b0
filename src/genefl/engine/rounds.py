"""The in-process driver: the server of :mod:`genefl.engine.server` with its clients here.

:class:`Engine` is the :class:`~genefl.engine.server.ClientRunner` that trains a round's
participants in this process (one after the other, or batched with
:mod:`genefl.engine.batched`), keeping each client's model in a
:class:`~genefl.engine.store.ClientStore`; everything the server does (joins, sampling,
validation, aggregation, byte counting, records) is its
:class:`~genefl.engine.server.FederationServer`. Every random draw comes from a named
stream of the run seed (:mod:`genefl.seeding`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from genefl.algorithms.base import Algorithm, ClientContext, ClientData
from genefl.callbacks.base import Callback, CallbackList, RoundRecord
from genefl.engine.batched import train_local_batched
from genefl.engine.client import (
    ClientStart,
    ClientUpdate,
    begin_update,
    client_context,
    client_drops_out,
    client_update,
    finish_update,
    update_record,
)
from genefl.engine.local import LocalSettings, LocalStats, evaluate, train_local
from genefl.engine.server import (  # noqa: F401  (re-exported: the engine's public names)
    ClientOutcome,
    ClientTask,
    FederationServer,
    PhaseLog,
    RoundPlan,
    ServerState,
    Transport,
    aggregate_clusters,
    dropped_outcome,
    sample_participants,
)
from genefl.engine.store import ClientStore
from genefl.engine.workers import TrainJob, WorkerPool
from genefl.method.cluster import data_signature
from genefl.models.layers import Layer, set_params
from genefl.types import ParamDict


@dataclass
class ClientTensors:
    """One client's data on the training device."""

    train: ClientData
    val: ClientData
    test: ClientData
    #: the data set's stored training images ``(N, C, H, W)`` (shared by every client)
    train_images: np.ndarray
    #: this client's rows of ``train_images`` (``None``: all of them)
    train_rows: np.ndarray | None = None

    @property
    def pixels(self) -> np.ndarray:
        """Flattened training pixels in ``[0, 1]``, ``(n, features)`` float32, for the
        client's signature (computed on each call, not kept).
        """
        images = (self.train_images if self.train_rows is None
                  else self.train_images[self.train_rows])
        return images.reshape(images.shape[0], -1).astype(np.float32) / 255.0


class Engine:
    """Runs rounds of one algorithm over a federation, in-process."""

    def __init__(
        self,
        algorithm: Algorithm,
        model: nn.Module,
        layers: Sequence[Layer],
        clients: Mapping[int, ClientTensors],
        server: ServerState,
        initial: ParamDict,
        settings: LocalSettings,
        seed: int,
        callbacks: Sequence[Callback] = (),
        fresh_model: Callable[[int], ParamDict] | None = None,
        dropout_rate: float = 0.0,
        max_update_ratio: float = math.inf,
        transport: Transport | None = None,
        store: ClientStore | None = None,
        batched: bool = False,
        signature_dim: int = 5,
        pool: WorkerPool | None = None,
    ) -> None:
        self.fed = FederationServer(
            algorithm, layers, server, seed, callbacks, max_update_ratio, transport
        )
        self.algorithm = algorithm
        self.model = model
        self.layers = list(layers)
        self.layer_map = self.fed.layer_map
        self.clients = clients
        self.initial = initial
        self.settings = settings
        self.seed = seed
        self.store = store if store is not None else ClientStore()
        self.model_bytes = self.fed.model_bytes
        self.fresh_model = fresh_model
        self.dropout_rate = dropout_rate
        #: train objective-free clients of equal size together (:mod:`genefl.engine.batched`)
        self.batched = batched
        #: singular vectors of a joining client's signature
        self.signature_dim = signature_dim
        #: worker processes that train a round's clients (``None``: this process)
        self.pool = pool
        #: signatures given to :meth:`run_phase` / :meth:`run_round` (else computed)
        self._signatures: Mapping[int, np.ndarray] = {}

    # the server's state, seen through the engine (callers and tests read these)
    @property
    def server(self) -> ServerState:
        """The server state (cluster models, centres, assignments)."""
        return self.fed.state

    @property
    def round(self) -> int:
        """Rounds done so far (both phases)."""
        return self.fed.round

    @round.setter
    def round(self, value: int) -> None:
        self.fed.round = value

    @property
    def callbacks(self) -> CallbackList:
        """The run's callbacks."""
        return self.fed.callbacks

    @property
    def transport(self) -> Transport:
        """The channel uploads travel through."""
        return self.fed.transport

    @transport.setter
    def transport(self, value: Transport) -> None:
        self.fed.transport = value

    @property
    def max_update_ratio(self) -> float:
        """The server's bound on an upload's update norm."""
        return self.fed.max_update_ratio

    # -- one client ------------------------------------------------------------------
    def _context(self, client_id: int, cluster: int, rnd: int, phase: str,
                 instructions: dict) -> ClientContext:
        record = self.store.get(client_id)
        return client_context(
            self.seed, client_id, cluster, rnd, phase, instructions,
            len(self.clients[client_id].train),
            dict(record.state) if record is not None else {},
        )

    def initialise(self, task: ClientTask, plan: RoundPlan) -> None:
        """A joining client builds its model from fresh weights and its package."""
        assert task.package is not None
        ctx = self._context(task.client_id, task.cluster, plan.round, plan.phase, {})
        cid = task.client_id
        fresh = self.fresh_model(cid) if self.fresh_model is not None else self.initial
        params = self.algorithm.init_new_client(fresh, task.package, ctx)
        self.store.put(cid, params, ctx.state)

    def drops_out(self, client_id: int, rnd: int) -> bool:
        """Whether the client fails mid-round this round (``dropout_rate``, own stream)."""
        return client_drops_out(self.seed, self.dropout_rate, rnd, client_id)

    def _own(self, client_id: int) -> ParamDict | None:
        record = self.store.get(client_id)
        return record.params if record is not None else None

    def _outcome(self, ctx: ClientContext, plan: RoundPlan, result: ClientUpdate,
                 down_bytes: int) -> ClientOutcome:
        """Keep the trained model and describe the client-round."""
        if result.after is not None:
            self.store.put(ctx.client_id, result.after, ctx.state)
        data = self.clients[ctx.client_id]
        return ClientOutcome(
            result.upload, update_record(ctx, plan.phase, result, down_bytes),
            int(data.test.y.shape[0]), int(data.val.y.shape[0]),
        )

    def train_client(self, task: ClientTask, plan: RoundPlan) -> ClientOutcome:
        """Local training and upload of one participant.

        A client that drops out has downloaded its share and then fails during training:
        it sends nothing and its store entry keeps last round's model.
        """
        cid = task.client_id
        ctx = self._context(cid, task.cluster, plan.round, plan.phase, plan.instructions)
        if self.drops_out(cid, plan.round):
            return dropped_outcome(task, plan, ctx.num_samples)
        data = self.clients[cid]
        result = client_update(
            self.algorithm, self.model, self.layers, self.layer_map, data.train, data.val,
            data.test, task.received, self._own(cid), self.initial, self.settings, ctx,
        )
        return self._outcome(ctx, plan, result, task.download_bytes)

    # -- the runner's side of a round --------------------------------------------------
    def train(self, plan: RoundPlan) -> list[ClientOutcome]:
        """Joining clients initialise, then every participant trains, in order. In
        batched mode, clients without a local objective and with equal training sizes
        train together (:func:`~genefl.engine.batched.train_local_batched`); the rest
        train one by one.
        """
        for task in plan.tasks:
            if task.package is not None:
                self.initialise(task, plan)
        if self.pool is not None and self.pool.size > 1:
            return self._train_in_pool(plan, self.pool)
        if not self.batched:
            return [self.train_client(task, plan) for task in plan.tasks]
        algo, done = self.algorithm, {}
        waiting: dict[int, list[tuple[ClientContext, int, ClientStart]]] = {}
        for task in plan.tasks:
            cid = task.client_id
            ctx = self._context(cid, task.cluster, plan.round, plan.phase, plan.instructions)
            if self.drops_out(cid, plan.round):
                done[cid] = dropped_outcome(task, plan, ctx.num_samples)
                continue
            data = self.clients[cid]
            begun = begin_update(algo, self.model, self.layers, data.train, task.received,
                                 self._own(cid), self.initial, ctx)
            if begun.objective is None:
                waiting.setdefault(ctx.num_samples, []).append(
                    (ctx, task.download_bytes, begun))
                continue
            stats = train_local(self.model, data.train, self.settings, begun.objective,
                                ctx.generator)
            done[cid] = self._finish(ctx, plan, begun, stats, task.download_bytes)
        for group in waiting.values():
            if len(group) == 1:
                ctx, down_bytes, begun = group[0]
                set_params(self.model, begun.before)
                stats = train_local(self.model, self.clients[ctx.client_id].train,
                                    self.settings, None, ctx.generator)
                done[ctx.client_id] = self._finish(ctx, plan, begun, stats, down_bytes)
                continue
            trained = train_local_batched(
                self.model, [b.before for _, _, b in group],
                [self.clients[c.client_id].train for c, _, _ in group], self.settings,
                [c.generator for c, _, _ in group],
            )
            for (ctx, down_bytes, begun), (params, stats) in zip(group, trained):
                set_params(self.model, params)
                done[ctx.client_id] = self._finish(ctx, plan, begun, stats, down_bytes)
        return [done[task.client_id] for task in plan.tasks]

    def _train_in_pool(self, plan: RoundPlan, pool: WorkerPool) -> list[ClientOutcome]:
        """Every participant's :func:`client_update` on the pool's workers, with what it
        received and its own model and extras from this process's store; the trained
        models go back into the store here, in ``plan.tasks`` order.
        """
        done: dict[int, ClientOutcome] = {}
        jobs: list[tuple[ClientTask, ClientContext]] = []
        for task in plan.tasks:
            cid = task.client_id
            ctx = self._context(cid, task.cluster, plan.round, plan.phase, plan.instructions)
            if self.drops_out(cid, plan.round):
                done[cid] = dropped_outcome(task, plan, ctx.num_samples)
            else:
                jobs.append((task, ctx))
        results = pool.train([
            TrainJob(ctx.client_id, ctx.cluster, ctx.round, ctx.phase, ctx.instructions,
                     dict(task.received), self._own(ctx.client_id), ctx.state)
            for task, ctx in jobs
        ])
        for (task, ctx), (result, state) in zip(jobs, results):
            ctx.state = state
            done[ctx.client_id] = self._outcome(ctx, plan, result, task.download_bytes)
        return [done[task.client_id] for task in plan.tasks]

    def _finish(
        self, ctx: ClientContext, plan: RoundPlan, begun: ClientStart, stats: LocalStats,
        down_bytes: int,
    ) -> ClientOutcome:
        data = self.clients[ctx.client_id]
        result = finish_update(self.algorithm, self.model, self.layers, self.layer_map,
                               data.val, data.test, begun, stats, ctx)
        return self._outcome(ctx, plan, result, down_bytes)

    def signatures(self, client_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The joining clients' flattened signatures (given, or from their pixels)."""
        return {
            cid: self._signatures[cid] if cid in self._signatures
            else data_signature(self.clients[cid].pixels, self.signature_dim)
            for cid in client_ids
        }

    def evaluate(
        self, client_ids: Sequence[int], received_for: Callable[[int], ParamDict],
        server_view_for: Callable[[int], ParamDict],
    ) -> tuple[float, float, float]:
        """``(correct, server_correct, total)`` test predictions of each client's own
        model (or, if it never trained, the model it would start from) and of its server
        view (that model overlaid with ``server_view_for(client)``).
        """
        correct = server_correct = total = 0.0
        for cid in client_ids:
            record = self.store.get(cid)
            if record is not None:
                params = record.params
            else:
                k = self.server.assignment[cid]
                ctx = self._context(cid, k, self.round, "eval", {})
                params = self.algorithm.start_params(received_for(cid), None, self.initial,
                                                     ctx)
            data = self.clients[cid].test
            set_params(self.model, params)
            x = data.x
            correct += evaluate(self.model, x, data.y) * data.y.shape[0]
            set_params(self.model, {**params, **server_view_for(cid)})
            server_correct += evaluate(self.model, x, data.y) * data.y.shape[0]
            total += data.y.shape[0]
        return correct, server_correct, total

    # -- rounds (the server's, with this engine as runner) -----------------------------
    def run_round(
        self, participants: Sequence[int], phase: str, phase_round: int, phase_log: PhaseLog,
        signatures: Mapping[int, np.ndarray] | None = None,
    ) -> RoundRecord:
        """One round: joins (agnostic phase), local training, per-cluster aggregation."""
        if signatures is not None:
            self._signatures = signatures
        return self.fed.run_round(participants, phase, phase_round, phase_log, self)

    def run_phase(
        self, phase: str, client_ids: Sequence[int], rounds: int, per_round: int,
        signatures: Mapping[int, np.ndarray] | None = None,
        phase_log: PhaseLog | None = None,
        after_round: Callable[[str, PhaseLog], None] | None = None,
    ) -> PhaseLog:
        """``rounds`` rounds, each sampling ``per_round`` of ``client_ids`` uniformly.

        A resumed phase passes its ``phase_log``; rounds it has done are skipped.
        ``after_round(phase, log)`` runs after each round (checkpoints).
        """
        if signatures is not None:
            self._signatures = signatures
        return self.fed.run_phase(phase, client_ids, rounds, per_round, self, phase_log,
                                  after_round)

    def evaluate_clients(self, client_ids: Sequence[int]) -> float:
        """Sample-weighted test accuracy of each client's own model (or, if it never
        trained, the model it would start from): the personalised view.
        """
        return self.fed.evaluate_clients(client_ids, self)[0]

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Server state, client store, algorithm state and the round counter."""
        return {**self.fed.state_dict(), "store": self.store.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (tensors are moved to the model's device)."""
        self.fed.load_state_dict(state, self._device())
        self.store.load_state_dict(state["store"], self._device())

    def _device(self) -> Any:
        return next(iter(self.initial.values())).device

    def runner_state_dict(self) -> dict[str, Any]:
        """The client store, for the run's checkpoint."""
        return {"store": self.store.state_dict()}

    def load_runner_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`runner_state_dict`."""
        self.store.load_state_dict(state["store"], self._device())
