"""The one round loop: known phase, then agnostic phase, for any algorithm.

The engine holds the server state (cluster models, signature centers), the client
store and the byte counters; the algorithm supplies what differs through the hooks of
:class:`~genefl.algorithms.base.Algorithm`. Every random draw comes from a named stream
of the run seed (:mod:`genefl.seeding`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genefl.algorithms.base import Algorithm, ClientContext, ClientData, RoundReport, Upload
from genefl.callbacks.base import Callback, CallbackList, ClientRoundRecord, RoundRecord
from genefl.engine.batched import train_local_batched
from genefl.engine.client import (
    ClientStart,
    ClientUpdate,
    begin_update,
    client_update,
    finish_update,
)
from genefl.engine.local import LocalSettings, LocalStats, evaluate, train_local
from genefl.engine.store import ClientStore
from genefl.engine.validate import upload_problem
from genefl.engine.wire import (
    LayerChoices,
    Traffic,
    layers_bytes,
    payload_bytes,
    select_layers,
)
from genefl.method.cluster import nearest_cluster, running_mean_update
from genefl.models.layers import Layer, set_params
from genefl.seeding import numpy_rng, torch_generator
from genefl.types import ParamDict

log = logging.getLogger("genefl")

#: what carries an upload to the server: returns what arrives (``None``: lost)
Transport = Callable[[Upload], "Upload | None"]


@dataclass
class ClientTensors:
    """One client's data on the training device."""

    train: ClientData
    val: ClientData
    test: ClientData
    #: flattened train pixels in [0, 1], ``(n, features)``, for its signature
    pixels: np.ndarray


@dataclass
class ServerState:
    """Everything the server keeps between rounds."""

    cluster_models: list[ParamDict]
    #: mean signature ``u_k`` per cluster ``(K, D)``
    centers: np.ndarray
    #: clients counted in each center ``N_k``
    counts: list[int]
    #: client id -> cluster
    assignment: dict[int, int]
    joined: set[int] = field(default_factory=set)


@dataclass
class PhaseLog:
    """Per-round accuracies and counters of one phase."""

    accuracies: list[float] = field(default_factory=list)
    #: upload bytes of each round
    round_uploads: list[int] = field(default_factory=list)
    traffic: Traffic = field(default_factory=Traffic)
    diverged: int = 0
    #: client-rounds lost to dropouts, and uploads the server rejected
    dropped: int = 0
    rejected: int = 0
    #: rounds of this phase completed
    rounds_done: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain-data copy for checkpoints."""
        state = asdict(self)
        state["traffic"] = asdict(self.traffic)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PhaseLog:
        """Inverse of :meth:`state_dict`."""
        values = dict(state)
        values["traffic"] = Traffic(**values["traffic"])
        values["accuracies"] = [float(a) for a in values["accuracies"]]
        values["round_uploads"] = [int(b) for b in values["round_uploads"]]
        return cls(**values)


def sample_participants(
    seed: int, phase: str, phase_round: int, client_ids: Sequence[int], per_round: int
) -> list[int]:
    """The ``per_round`` clients of ``client_ids`` sampled uniformly (without replacement)
    for round ``phase_round`` of ``phase``, from the seed's own stream; sorted.
    """
    rng = numpy_rng(seed, "sample", phase, phase_round)
    chosen = rng.choice(np.asarray(client_ids), size=per_round, replace=False)
    return sorted(int(c) for c in chosen)


def aggregate_clusters(
    algorithm: Algorithm, server: ServerState, uploads: Sequence[Upload]
) -> None:
    """Replace each cluster model that received uploads by ``algorithm.aggregate`` of them
    (clusters without uploads keep their model).
    """
    by_cluster: dict[int, list[Upload]] = {}
    for u in uploads:
        by_cluster.setdefault(u.cluster, []).append(u)
    for k, ups in by_cluster.items():
        server.cluster_models[k] = algorithm.aggregate(k, server.cluster_models[k], ups)


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
    ) -> None:
        self.algorithm = algorithm
        self.model = model
        self.layers = list(layers)
        self.layer_map = {layer.name: layer for layer in self.layers}
        self.clients = clients
        self.server = server
        self.initial = initial
        self.settings = settings
        self.seed = seed
        self.callbacks = CallbackList(list(callbacks))
        self.store = store if store is not None else ClientStore()
        self.model_bytes = sum(layer.nbytes for layer in self.layers)
        self.fresh_model = fresh_model
        self.dropout_rate = dropout_rate
        #: train objective-free clients of equal size together (:mod:`genefl.engine.batched`)
        self.batched = batched
        self.max_update_ratio = max_update_ratio
        #: the channel uploads travel through (fault-injection experiments replace it)
        self.transport: Transport = transport or (lambda upload: upload)
        self.round = 0

    # -- one client ------------------------------------------------------------------
    def _context(self, client_id: int, phase: str, instructions: dict) -> ClientContext:
        record = self.store.get(client_id)
        return ClientContext(
            client_id=client_id,
            cluster=self.server.assignment[client_id],
            round=self.round,
            phase=phase,
            instructions=instructions,
            num_samples=int(self.clients[client_id].train.y.shape[0]),
            state=dict(record.state) if record is not None else {},
            generator=torch_generator(self.seed, "train", self.round, client_id),
            rng=numpy_rng(self.seed, "algorithm", self.round, client_id),
        )

    def join(self, client_id: int, signature: np.ndarray, phase: str) -> int:
        """A new client sends its signature, is matched and initialised; returns init bytes."""
        server = self.server
        k = nearest_cluster(signature, server.centers)
        server.centers[k] = running_mean_update(server.centers[k], server.counts[k], signature)
        server.counts[k] += 1
        server.assignment[client_id] = k
        server.joined.add(client_id)
        package = select_layers(
            server.cluster_models[k], self.layer_map, self.algorithm.learngene_layers(k)
        )
        ctx = self._context(client_id, phase, {})
        fresh = self.fresh_model(client_id) if self.fresh_model is not None else self.initial
        params = self.algorithm.init_new_client(fresh, package, ctx)
        self.store.put(client_id, params, ctx.state)
        return payload_bytes(package)

    def drops_out(self, client_id: int) -> bool:
        """Whether the client fails mid-round this round (``dropout_rate``, own stream)."""
        if self.dropout_rate <= 0.0:
            return False
        return bool(numpy_rng(self.seed, "dropout", self.round, client_id).random()
                    < self.dropout_rate)

    def _download(
        self, client_id: int, phase: str, instructions: dict, skip_download: set[str]
    ) -> tuple[ClientContext, ParamDict, int]:
        """The client's context, what it receives and the download bytes counted."""
        k = self.server.assignment[client_id]
        ctx = self._context(client_id, phase, instructions)
        names = self.algorithm.download_layers(k, phase)
        received = select_layers(self.server.cluster_models[k], self.layer_map, names)
        down_bytes = layers_bytes(self.layer_map, [n for n in names if n not in skip_download])
        return ctx, received, down_bytes

    def _dropped(self, ctx: ClientContext, phase: str, down_bytes: int) -> ClientRoundRecord:
        nan = float("nan")
        return ClientRoundRecord(
            round=self.round, phase=phase, client_id=ctx.client_id, cluster=ctx.cluster,
            joined=False, num_train=ctx.num_samples, test_accuracy=nan, val_accuracy=nan,
            train_loss=nan, diverged=False, upload_layers=(), upload_bytes=0,
            download_bytes=down_bytes, init_bytes=0, dropped=True,
        )

    def _own(self, client_id: int) -> ParamDict | None:
        record = self.store.get(client_id)
        return record.params if record is not None else None

    def _keep_and_record(
        self, ctx: ClientContext, phase: str, result: ClientUpdate, down_bytes: int
    ) -> tuple[Upload | None, ClientRoundRecord]:
        """Keep the trained model and describe the client-round."""
        if result.after is not None:
            self.store.put(ctx.client_id, result.after, ctx.state)
        upload = result.upload
        record = ClientRoundRecord(
            round=self.round, phase=phase, client_id=ctx.client_id, cluster=ctx.cluster,
            joined=False, num_train=ctx.num_samples, test_accuracy=result.test_accuracy,
            val_accuracy=result.val_accuracy, train_loss=result.stats.mean_loss,
            diverged=result.stats.diverged,
            upload_layers=upload.layers if upload is not None else (),
            upload_bytes=result.upload_bytes, download_bytes=down_bytes, init_bytes=0,
            metrics=result.metrics,
        )
        return upload, record

    def train_client(
        self, client_id: int, phase: str, instructions: dict, skip_download: set[str]
    ) -> tuple[Upload | None, ClientRoundRecord]:
        """Download, local training and upload of one participant.

        A client that drops out has downloaded its share and then fails during training:
        it sends nothing and its store entry keeps last round's model.
        """
        ctx, received, down_bytes = self._download(client_id, phase, instructions, skip_download)
        if self.drops_out(client_id):
            return None, self._dropped(ctx, phase, down_bytes)
        data = self.clients[client_id]
        result = client_update(
            self.algorithm, self.model, self.layers, self.layer_map, data.train, data.val,
            data.test, received, self._own(client_id), self.initial, self.settings, ctx,
        )
        return self._keep_and_record(ctx, phase, result, down_bytes)

    def train_clients(
        self, participants: Sequence[int], phase: str, instructions: dict,
        skip_download: Mapping[int, set[str]],
    ) -> list[tuple[Upload | None, ClientRoundRecord]]:
        """:meth:`train_client` for every participant, in order. In batched mode, clients
        without a local objective and with equal training sizes train together
        (:func:`~genefl.engine.batched.train_local_batched`); the rest train one by one.
        """
        if not self.batched:
            return [
                self.train_client(cid, phase, instructions, skip_download[cid])
                for cid in participants
            ]
        algo, done = self.algorithm, {}
        waiting: dict[int, list[tuple[ClientContext, int, ClientStart]]] = {}
        for cid in participants:
            ctx, received, down_bytes = self._download(cid, phase, instructions,
                                                       skip_download[cid])
            if self.drops_out(cid):
                done[cid] = (None, self._dropped(ctx, phase, down_bytes))
                continue
            data = self.clients[cid]
            begun = begin_update(algo, self.model, self.layers, data.train, received,
                                 self._own(cid), self.initial, ctx)
            if begun.objective is None:
                waiting.setdefault(ctx.num_samples, []).append((ctx, down_bytes, begun))
                continue
            stats = train_local(self.model, data.train, self.settings, begun.objective,
                                ctx.generator)
            done[cid] = self._finish(ctx, phase, begun, stats, down_bytes)
        for group in waiting.values():
            if len(group) == 1:
                ctx, down_bytes, begun = group[0]
                set_params(self.model, begun.before)
                stats = train_local(self.model, self.clients[ctx.client_id].train,
                                    self.settings, None, ctx.generator)
                done[ctx.client_id] = self._finish(ctx, phase, begun, stats, down_bytes)
                continue
            trained = train_local_batched(
                self.model, [b.before for _, _, b in group],
                [self.clients[c.client_id].train for c, _, _ in group], self.settings,
                [c.generator for c, _, _ in group],
            )
            for (ctx, down_bytes, begun), (params, stats) in zip(group, trained):
                set_params(self.model, params)
                done[ctx.client_id] = self._finish(ctx, phase, begun, stats, down_bytes)
        return [done[cid] for cid in participants]

    def _finish(
        self, ctx: ClientContext, phase: str, begun: ClientStart, stats: LocalStats,
        down_bytes: int,
    ) -> tuple[Upload | None, ClientRoundRecord]:
        data = self.clients[ctx.client_id]
        result = finish_update(self.algorithm, self.model, self.layers, self.layer_map,
                               data.val, data.test, begun, stats, ctx)
        return self._keep_and_record(ctx, phase, result, down_bytes)

    def receive(self, upload: Upload, rec: ClientRoundRecord) -> Upload | None:
        """The server's side of one upload: what the transport delivers, validated.

        Returns the upload to aggregate, or ``None``; ``rec`` records a loss in transit
        (as a dropout, nothing counted as sent) or the reason for a rejection.
        """
        arrived = self.transport(upload)
        if arrived is None:
            rec.dropped, rec.upload_bytes, rec.upload_layers = True, 0, ()
            return None
        problem = upload_problem(
            arrived, self.server.cluster_models[arrived.cluster], self.layer_map,
            self.algorithm.allowed_upload_layers(arrived.cluster), self.max_update_ratio,
        )
        if problem is not None:
            rec.rejected = problem
            log.warning("round %d: upload of client %d rejected: %s", self.round,
                        upload.client_id, problem)
            return None
        return arrived

    # -- one round -------------------------------------------------------------------
    def run_round(
        self, participants: Sequence[int], phase: str, phase_round: int, phase_log: PhaseLog,
        signatures: Mapping[int, np.ndarray] | None = None,
    ) -> RoundRecord:
        """One round: joins (agnostic phase), local training, per-cluster aggregation."""
        t0 = time.perf_counter()
        algo = self.algorithm
        instructions = algo.instructions(self.round, phase)
        traffic = Traffic()
        uploads: list[Upload] = []
        choices = LayerChoices()
        chosen: dict[int, list[tuple[str, ...]]] = {}
        correct = val_correct = n_test = n_val = 0.0
        losses: list[float] = []
        diverged = dropped = rejected = 0
        joins: dict[int, int] = {}  # new client -> its init bytes
        skips: dict[int, set[str]] = {}
        for cid in participants:
            skips[cid] = set()
            if signatures is not None and cid not in self.server.joined:
                joins[cid] = self.join(cid, signatures[cid], phase)
                traffic.signature += 4 * int(signatures[cid].size)
                skips[cid] = set(algo.learngene_layers(self.server.assignment[cid]))
        outcomes = self.train_clients(participants, phase, instructions, skips)
        for cid, (upload, rec) in zip(participants, outcomes):
            joined_now = cid in joins
            init_bytes = joins.get(cid, 0)
            rec.joined = joined_now
            rec.init_bytes = init_bytes
            traffic.init += init_bytes
            traffic.download += rec.download_bytes
            traffic.full_model_upload += self.model_bytes
            if rec.dropped:
                dropped += 1
            elif upload is None:
                diverged += 1
            else:
                accepted = self.receive(upload, rec)
                dropped += rec.dropped
                rejected += bool(rec.rejected)
                traffic.upload += rec.upload_bytes
                if accepted is not None:
                    uploads.append(accepted)
                    choices.add(accepted.layers)
                    chosen.setdefault(accepted.cluster, []).append(accepted.layers)
                if not rec.dropped:
                    data = self.clients[cid]
                    correct += rec.test_accuracy * data.test.y.shape[0]
                    n_test += data.test.y.shape[0]
                    if data.val.y.shape[0]:
                        val_correct += rec.val_accuracy * data.val.y.shape[0]
                        n_val += data.val.y.shape[0]
                    losses.append(rec.train_loss)
            self.callbacks.on_client_end(rec)
        aggregate_clusters(algo, self.server, uploads)
        val_acc = val_correct / n_val if n_val else float("nan")
        acc = correct / n_test if n_test else float("nan")
        algo.end_round(RoundReport(self.round, phase, uploads, val_acc, chosen))
        phase_log.traffic.add(traffic)
        phase_log.accuracies.append(acc)
        phase_log.round_uploads.append(traffic.upload)
        phase_log.diverged += diverged
        phase_log.dropped += dropped
        phase_log.rejected += rejected
        phase_log.rounds_done += 1
        record = RoundRecord(
            round=self.round, phase=phase, phase_round=phase_round,
            participants=len(participants), accuracy=acc, val_accuracy=val_acc,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            upload_bytes=traffic.upload, download_bytes=traffic.download + traffic.init,
            init_bytes=traffic.init, cum_upload_bytes=phase_log.traffic.upload,
            gamma=instructions.get("gamma"), chosen_layers=choices.render(),
            diverged=diverged, seconds=time.perf_counter() - t0, dropped=dropped,
            rejected=rejected,
        )
        self.callbacks.on_round_end(record)
        self.round += 1
        return record

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
        log_ = phase_log if phase_log is not None else PhaseLog()
        self.callbacks.on_phase_start(phase, rounds)
        for r in range(log_.rounds_done, rounds):
            participants = sample_participants(self.seed, phase, r, client_ids, per_round)
            self.run_round(participants, phase, r, log_, signatures)
            if after_round is not None:
                after_round(phase, log_)
        return log_

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Server state, client store, algorithm state and the round counter."""
        server = self.server
        return {
            "round": self.round,
            "cluster_models": [dict(m) for m in server.cluster_models],
            "centers": torch.from_numpy(np.ascontiguousarray(server.centers)),
            "counts": list(server.counts),
            "assignment": {int(k): int(v) for k, v in server.assignment.items()},
            "joined": sorted(server.joined),
            "store": self.store.state_dict(),
            "algorithm": self.algorithm.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (tensors are moved to the model's device)."""
        device = next(iter(self.initial.values())).device
        server = self.server
        self.round = int(state["round"])
        server.cluster_models = [
            {k: v.to(device) for k, v in m.items()} for m in state["cluster_models"]
        ]
        server.centers = state["centers"].numpy().copy()
        server.counts = [int(c) for c in state["counts"]]
        server.assignment = {int(k): int(v) for k, v in state["assignment"].items()}
        server.joined = {int(c) for c in state["joined"]}
        self.store.load_state_dict(state["store"], device)
        self.algorithm.load_state_dict(state["algorithm"])

    # -- evaluation ------------------------------------------------------------------
    def evaluate_clients(self, client_ids: Sequence[int], phase: str = "known") -> float:
        """Sample-weighted test accuracy of each client's own model (or, if it never
        trained, the model it would start from in ``phase``).
        """
        correct = total = 0.0
        for cid in client_ids:
            record = self.store.get(cid)
            if record is not None:
                params = record.params
            else:
                k = self.server.assignment[cid]
                ctx = self._context(cid, "eval", {})
                received = select_layers(
                    self.server.cluster_models[k], self.layer_map,
                    self.algorithm.download_layers(k, phase),
                )
                params = self.algorithm.start_params(received, None, self.initial, ctx)
            set_params(self.model, params)
            data = self.clients[cid].test
            correct += evaluate(self.model, data.x, data.y) * data.y.shape[0]
            total += data.y.shape[0]
        return correct / total if total else math.nan
