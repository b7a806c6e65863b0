"""The server side of a federation, the same whichever driver moves the messages.

:class:`FederationServer` holds everything the server keeps and does: the cluster models,
signature centres and assignments (:class:`ServerState`), the one-shot clustering of the
known clients' signatures, sampling, the agnostic join (nearest centre, running-mean
update, the cluster's learnGene package), upload validation, per-layer aggregation, byte
counting, the round records and phase logs, checkpoints and the results. It never
touches client data: what clients do goes through a :class:`ClientRunner`, which gets a
:class:`RoundPlan` (each participant's download and, for a client that joins now, its
learnGene package) and answers with one :class:`ClientOutcome` per participant.

Two runners exist: the in-process :class:`~genefl.engine.rounds.Engine` (it calls
:func:`~genefl.engine.client.client_update` for each participant) and the Flower
ServerApp's :class:`~genefl.flower.server_app.FlowerClients` (it sends the plan as
Flower messages to the SuperNodes). A parallel runner (worker processes) only has to
implement :meth:`ClientRunner.train`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from genefl.algorithms.base import Algorithm, RoundReport, Upload
from genefl.callbacks.base import Callback, CallbackList, ClientRoundRecord, RoundRecord
from genefl.callbacks.writers import json_safe
from genefl.config import RunConfig
from genefl.engine.checkpoint import load_checkpoint, save_checkpoint
from genefl.engine.validate import upload_problem
from genefl.engine.wire import LayerChoices, Traffic, layers_bytes, payload_bytes, select_layers
from genefl.errors import ConfigError
from genefl.method.cluster import (
    kmeans_clusters,
    nearest_cluster,
    pacfl_clusters,
    running_mean_update,
)
from genefl.models.layers import Layer
from genefl.seeding import derive_seed, numpy_rng
from genefl.types import ParamDict

log = logging.getLogger("genefl")

#: what carries an upload to the server: returns what arrives (``None``: lost)
Transport = Callable[[Upload], "Upload | None"]

#: how many of the last rounds the "last10" figures average
LAST_ROUNDS = 10

#: ``--eval-every 0`` (auto) keeps the evaluation of every client under this share of the
#: training time of a round
EVAL_BUDGET = 0.1
#: one training sample-epoch costs about this many test predictions (measured on 2 CPU
#: cores with the small CNN at the CI preset: a round's training 1.0-1.2 s for 3,372
#: sample-epochs, one view of 5,000 test images 0.28-0.31 s, so about 5.3)
TRAIN_COST_IN_PREDICTIONS = 5.0
#: the evaluation views (personalised and server)
EVAL_VIEWS = 2


def auto_eval_every(test_samples: int, train_samples_per_round: float, epochs: int) -> int:
    """The smallest evaluation interval (rounds) at which scoring ``test_samples`` test
    images in both views costs at most :data:`EVAL_BUDGET` of the rounds' training
    (``train_samples_per_round`` training images, ``epochs`` local epochs each), by the
    cost model :data:`TRAIN_COST_IN_PREDICTIONS`; at least 1.
    """
    train_cost = TRAIN_COST_IN_PREDICTIONS * train_samples_per_round * epochs
    if train_cost <= 0:
        return 1
    return max(1, math.ceil(EVAL_VIEWS * test_samples / (EVAL_BUDGET * train_cost)))


def evaluates_at(phase_round: int, rounds: int, every: int) -> bool:
    """Whether every client is scored after ``phase_round`` (0-based) of a phase of
    ``rounds`` rounds: the first and the last round, and every ``every``-th (``every``
    0: never).
    """
    if every <= 0:
        return False
    return phase_round in (0, rounds - 1) or (phase_round + 1) % every == 0


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
    #: rounds (0-based, of this phase) after which every client of the phase was scored,
    #: and the sample-weighted accuracy of the personalised and the server view
    eval_rounds: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    eval_accuracy_server: list[float] = field(default_factory=list)

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
        values["eval_rounds"] = [int(r) for r in values.get("eval_rounds", [])]
        for key in ("eval_accuracy", "eval_accuracy_server"):
            values[key] = [float(a) for a in values.get(key, [])]
        return cls(**values)

    def last_evaluation(self) -> tuple[float, float]:
        """The last scoring of every client: ``(personalised, server)`` (NaN if none)."""
        if not self.eval_rounds:
            return math.nan, math.nan
        return self.eval_accuracy[-1], self.eval_accuracy_server[-1]

    def evaluation_at(self, phase_round: int) -> tuple[float, float]:
        """The scoring after ``phase_round``: ``(personalised, server)`` (NaN if none)."""
        if phase_round not in self.eval_rounds:
            return math.nan, math.nan
        i = self.eval_rounds.index(phase_round)
        return self.eval_accuracy[i], self.eval_accuracy_server[i]

    def evaluations_last(self, rounds: int, n: int = LAST_ROUNDS) -> tuple[float, float]:
        """Mean of the scorings after the last ``n`` of the phase's ``rounds`` rounds:
        ``(personalised, server)``, NaN values ignored.
        """
        keep = [i for i, r in enumerate(self.eval_rounds) if r >= rounds - n]
        return (mean_last([self.eval_accuracy[i] for i in keep], len(keep) or 1),
                mean_last([self.eval_accuracy_server[i] for i in keep], len(keep) or 1))


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


def cluster_signatures(
    bases: Sequence[np.ndarray], config: RunConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One-shot clustering of the known clients' signature bases (each ``(features, p)``,
    :func:`~genefl.method.cluster.subspace_basis`): ``(labels, centers)``.
    """
    if config.clustering == "pacfl":
        return pacfl_clusters(list(bases), config.clusters)
    signatures = np.stack([b.flatten(order="F") for b in bases])
    return kmeans_clusters(signatures, config.clusters, derive_seed(config.seed, "kmeans") % 2**31)


def initial_state(
    known_ids: Sequence[int], labels: np.ndarray, centers: np.ndarray,
    initial: ParamDict, clusters: int,
) -> ServerState:
    """Server state after the clustering: every cluster model is ``initial``."""
    return ServerState(
        cluster_models=[{k: v.clone() for k, v in initial.items()} for _ in range(clusters)],
        centers=centers.copy(),
        counts=[int((labels == k).sum()) for k in range(clusters)],
        assignment={int(cid): int(k) for cid, k in zip(known_ids, labels)},
    )


def signature_bytes(basis: np.ndarray) -> int:
    """Wire bytes of one signature: every float counts 4 bytes (SPEC §6)."""
    return 4 * int(np.asarray(basis).size)


@dataclass
class ClientTask:
    """What the server sends one participant this round."""

    client_id: int
    cluster: int
    #: the tensors of ``algorithm.download_layers(cluster, phase)`` of its cluster model
    received: ParamDict
    #: download bytes counted (the learnGene layers a joining client already got are not)
    download_bytes: int
    #: a client that joins this round: the learnGene package it initialises from
    package: ParamDict | None = None


@dataclass
class RoundPlan:
    """One round's work for the clients."""

    round: int
    phase: str
    phase_round: int
    instructions: dict[str, Any]
    tasks: list[ClientTask]


@dataclass
class ClientOutcome:
    """One participant's answer: its upload (``None``: nothing arrived) and record."""

    upload: Upload | None
    record: ClientRoundRecord
    #: its test / validation sample counts (to weight the round's accuracies)
    num_test: int
    num_val: int


def dropped_outcome(task: ClientTask, plan: RoundPlan, num_samples: int = 0) -> ClientOutcome:
    """The outcome of a participant that downloaded its share and sent nothing."""
    nan = float("nan")
    record = ClientRoundRecord(
        round=plan.round, phase=plan.phase, client_id=task.client_id, cluster=task.cluster,
        joined=False, num_train=num_samples, test_accuracy=nan, val_accuracy=nan,
        train_loss=nan, diverged=False, upload_layers=(), upload_bytes=0,
        download_bytes=task.download_bytes, init_bytes=0, dropped=True,
    )
    return ClientOutcome(None, record, 0, 0)


class ClientRunner(Protocol):
    """What the server needs from the clients, wherever they run."""

    def train(self, plan: RoundPlan) -> list[ClientOutcome]:
        """Run the plan; one outcome per task, in task order."""

    def signatures(self, client_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Signature bases of clients about to join (a client that does not answer is
        left out).
        """

    def evaluate(
        self, client_ids: Sequence[int], received_for: Callable[[int], ParamDict],
        server_view_for: Callable[[int], ParamDict],
    ) -> tuple[float, float, float]:
        """``(correct, server_correct, total)`` test predictions of each client: of its
        own model (or, if it never trained, the model it would start from
        ``received_for(client)``) and of the server view, that model overlaid with
        ``server_view_for(client)`` (the cluster model's layers the method does not keep
        local).
        """

    def runner_state_dict(self) -> dict[str, Any]:
        """Client-side state kept in the checkpoint (the in-process client store)."""

    def load_runner_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`runner_state_dict`."""


#: the participants a round samples from: fixed ids, or ``(phase, phase_round) -> ids``
Pool = Sequence[int] | Callable[[str, int], Sequence[int]]


class FederationServer:
    """The server of one federation; a :class:`ClientRunner` does the client work."""

    def __init__(
        self,
        algorithm: Algorithm,
        layers: Sequence[Layer],
        state: ServerState,
        seed: int,
        callbacks: Sequence[Callback] = (),
        max_update_ratio: float = math.inf,
        transport: Transport | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.layers = list(layers)
        self.layer_map = {layer.name: layer for layer in self.layers}
        self.state = state
        self.seed = seed
        self.callbacks = CallbackList(list(callbacks))
        self.model_bytes = sum(layer.nbytes for layer in self.layers)
        self.max_update_ratio = max_update_ratio
        #: the channel uploads travel through (fault-injection experiments replace it)
        self.transport: Transport = transport or (lambda upload: upload)
        self.round = 0

    # -- one client ------------------------------------------------------------------
    def join(self, client_id: int, signature: np.ndarray) -> ParamDict:
        """A new client's signature is matched to the nearest centre (running-mean update
        of that centre); returns the cluster's learnGene package it initialises from.
        """
        state = self.state
        k = nearest_cluster(signature, state.centers)
        state.centers[k] = running_mean_update(state.centers[k], state.counts[k], signature)
        state.counts[k] += 1
        state.assignment[client_id] = k
        state.joined.add(client_id)
        return self.package(client_id)

    def package(self, client_id: int) -> ParamDict:
        """The learnGene package of the client's cluster."""
        k = self.state.assignment[client_id]
        return select_layers(
            self.state.cluster_models[k], self.layer_map, self.algorithm.learngene_layers(k)
        )

    def server_view(self, client_id: int) -> ParamDict:
        """The client's cluster model as the server holds it, without the layers the
        method keeps local by design (:meth:`~genefl.algorithms.base.Algorithm.kept_local`),
        which the client completes with its own values.
        """
        k = self.state.assignment[client_id]
        local = set(self.algorithm.kept_local(k))
        names = [layer.name for layer in self.layers if layer.name not in local]
        return select_layers(self.state.cluster_models[k], self.layer_map, names)

    def received(self, client_id: int, phase: str) -> ParamDict:
        """What the client downloads at the start of a round of ``phase``."""
        k = self.state.assignment[client_id]
        return select_layers(
            self.state.cluster_models[k], self.layer_map,
            self.algorithm.download_layers(k, phase),
        )

    def task(
        self, client_id: int, phase: str, package: ParamDict | None = None
    ) -> ClientTask:
        """The client's download this round; a joining client does not count the
        learnGene layers it got with its package.
        """
        k = self.state.assignment[client_id]
        names = self.algorithm.download_layers(k, phase)
        skip = set(self.algorithm.learngene_layers(k)) if package is not None else set()
        down = layers_bytes(self.layer_map, [n for n in names if n not in skip])
        return ClientTask(client_id, k, self.received(client_id, phase), down, package)

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
            arrived, self.state.cluster_models[arrived.cluster], self.layer_map,
            self.algorithm.allowed_upload_layers(arrived.cluster), self.max_update_ratio,
        )
        if problem is not None:
            rec.rejected = problem
            log.warning("round %d: upload of client %d rejected: %s", self.round,
                        upload.client_id, problem)
            return None
        return arrived

    # -- one round -------------------------------------------------------------------
    def plan(self, participants: Sequence[int], phase: str, phase_round: int,
             runner: ClientRunner, traffic: Traffic) -> tuple[RoundPlan, dict[int, int]]:
        """Join the participants not yet assigned to a cluster (their signatures come from
        ``runner``; one that sends none is left out of the round) and build the round's
        tasks; returns the plan and the init bytes of each joining client.
        """
        newcomers = [c for c in participants if c not in self.state.assignment]
        signatures = runner.signatures(newcomers) if newcomers else {}
        tasks, joins = [], {}
        for cid in participants:
            package = None
            if cid in newcomers:
                if cid not in signatures:
                    log.warning("round %d: client %d sent no signature; left out of the round",
                                self.round, cid)
                    continue
                package = self.join(cid, signatures[cid])
                joins[cid] = payload_bytes(package)
                traffic.signature += signature_bytes(signatures[cid])
            tasks.append(self.task(cid, phase, package))
        instructions = self.algorithm.instructions(self.round, phase)
        return RoundPlan(self.round, phase, phase_round, instructions, tasks), joins

    def run_round(
        self, participants: Sequence[int], phase: str, phase_round: int, phase_log: PhaseLog,
        runner: ClientRunner, eval_pool: Callable[[], Sequence[int]] | None = None,
    ) -> RoundRecord:
        """One round: joins, the clients' work, validation, per-cluster aggregation; with
        ``eval_pool``, then every client it gives (after the round's joins) is scored in
        both views.
        """
        t0 = time.perf_counter()
        algo = self.algorithm
        traffic = Traffic()
        plan, joins = self.plan(participants, phase, phase_round, runner, traffic)
        instructions = plan.instructions
        outcomes = runner.train(plan)
        uploads: list[Upload] = []
        choices = LayerChoices()
        chosen: dict[int, list[tuple[str, ...]]] = {}
        correct = val_correct = n_test = n_val = 0.0
        losses: list[float] = []
        diverged = dropped = rejected = 0
        for task, outcome in zip(plan.tasks, outcomes):
            upload, rec = outcome.upload, outcome.record
            cid = task.client_id
            init_bytes = joins.get(cid, 0)
            rec.joined = cid in joins
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
                    correct += rec.test_accuracy * outcome.num_test
                    n_test += outcome.num_test
                    if outcome.num_val:
                        val_correct += rec.val_accuracy * outcome.num_val
                        n_val += outcome.num_val
                    losses.append(rec.train_loss)
            self.callbacks.on_client_end(rec)
        aggregate_clusters(algo, self.state, uploads)
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
        scored, eval_ids = (math.nan, math.nan), None
        if eval_pool is not None:
            eval_ids = list(eval_pool())
            scored = self.evaluate_clients(eval_ids, runner, phase)
            phase_log.eval_rounds.append(phase_round)
            phase_log.eval_accuracy.append(scored[0])
            phase_log.eval_accuracy_server.append(scored[1])
        record = RoundRecord(
            round=self.round, phase=phase, phase_round=phase_round,
            participants=len(plan.tasks), accuracy=acc, val_accuracy=val_acc,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            upload_bytes=traffic.upload, download_bytes=traffic.download + traffic.init,
            init_bytes=traffic.init, cum_upload_bytes=phase_log.traffic.upload,
            gamma=instructions.get("gamma"), chosen_layers=choices.render(),
            diverged=diverged, seconds=time.perf_counter() - t0, dropped=dropped,
            rejected=rejected, eval_accuracy=scored[0], eval_accuracy_server=scored[1],
            eval_clients=len(eval_ids) if eval_ids is not None else 0,
        )
        self.callbacks.on_round_end(record)
        self.round += 1
        return record

    def run_phase(
        self, phase: str, pool: Pool, rounds: int, per_round: int, runner: ClientRunner,
        phase_log: PhaseLog | None = None,
        after_round: Callable[[str, PhaseLog], None] | None = None,
        eval_every: int = 0, eval_pool: Callable[[], Sequence[int]] | None = None,
    ) -> PhaseLog:
        """``rounds`` rounds, each sampling ``per_round`` clients of ``pool`` uniformly.

        ``pool`` is the phase's client ids, or a function giving the ids available for a
        round (a live federation's connected clients); when fewer than ``per_round`` are
        available, all of them take part. A resumed phase passes its ``phase_log``;
        rounds it has done are skipped. ``after_round(phase, log)`` runs after each round
        (checkpoints). With ``eval_pool``, the clients it gives are scored in both views
        after the rounds :func:`evaluates_at` picks for ``eval_every``.
        """
        log_ = phase_log if phase_log is not None else PhaseLog()
        self.callbacks.on_phase_start(phase, rounds)
        for r in range(log_.rounds_done, rounds):
            ids = list(pool(phase, r)) if callable(pool) else list(pool)
            participants = sample_participants(self.seed, phase, r, ids,
                                               min(per_round, len(ids)))
            scoring = evaluates_at(r, rounds, eval_every)
            self.run_round(participants, phase, r, log_, runner,
                           eval_pool if scoring else None)
            if after_round is not None:
                after_round(phase, log_)
        return log_

    # -- evaluation ------------------------------------------------------------------
    def evaluate_clients(
        self, client_ids: Sequence[int], runner: ClientRunner, phase: str = "known"
    ) -> tuple[float, float]:
        """Sample-weighted test accuracy of the clients in both views: ``(personalised,
        server)``. Personalised: each client's own model (or, if it never trained, the
        model it would start from in ``phase``). Server: the cluster model as the server
        holds it, completed with the client's values of the layers the method keeps
        local by design (:meth:`server_view`).
        """
        correct, server_correct, total = runner.evaluate(
            client_ids, lambda cid: self.received(cid, phase), self.server_view
        )
        if not total:
            return math.nan, math.nan
        return correct / total, server_correct / total

    def learngene_summary(self, clusters: int) -> dict[str, Any]:
        """Sizes and layers of each cluster's learnGene (end of the known phase)."""
        algo = self.algorithm
        return {
            "learngene_sizes": [
                sum(self.layer_map[n].nbytes for n in algo.learngene_layers(k))
                for k in range(clusters)
            ],
            "learngene_layers": {str(k): algo.learngene_layers(k) for k in range(clusters)},
        }

    # -- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Server state, algorithm state and the round counter."""
        state = self.state
        return {
            "round": self.round,
            "cluster_models": [dict(m) for m in state.cluster_models],
            "centers": torch.from_numpy(np.ascontiguousarray(state.centers)),
            "counts": list(state.counts),
            "assignment": {int(k): int(v) for k, v in state.assignment.items()},
            "joined": sorted(state.joined),
            "algorithm": self.algorithm.state_dict(),
        }

    def load_state_dict(self, saved: Mapping[str, Any], device: torch.device) -> None:
        """Restore :meth:`state_dict` (tensors are moved to ``device``)."""
        state = self.state
        self.round = int(saved["round"])
        state.cluster_models = [
            {k: v.to(device) for k, v in m.items()} for m in saved["cluster_models"]
        ]
        state.centers = saved["centers"].numpy().copy()
        state.counts = [int(c) for c in saved["counts"]]
        state.assignment = {int(k): int(v) for k, v in saved["assignment"].items()}
        state.joined = {int(c) for c in saved["joined"]}
        self.algorithm.load_state_dict(saved["algorithm"])


def mean_last(values: Sequence[float], n: int = LAST_ROUNDS) -> float:
    """Mean of the last ``n`` values that are not NaN (NaN if none)."""
    tail = [v for v in values[-n:] if not math.isnan(v)]
    return float(np.mean(tail)) if tail else math.nan


#: resolved keys that say where a run's files are, not what the run is (a run directory
#: that was moved or renamed is still the same run)
PLACE_KEYS = ("output_dir",)
#: resolved keys that say how a run is executed, not what it computes (a run resumed or
#: reused with another worker count is the same run)
EXECUTION_KEYS = ("workers", "threads_per_worker")


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: checkpoint ..., now ...`` for every key whose value differs (the keys of
    :data:`PLACE_KEYS` and :data:`EXECUTION_KEYS` aside).
    """
    keys = sorted((set(stored) | set(current)) - set(PLACE_KEYS) - set(EXECUTION_KEYS))
    return [
        f"{k}: checkpoint {stored.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if json_safe(stored.get(k)) != json_safe(current.get(k))
    ]


@dataclass
class RunPlan:
    """What a whole run needs besides the server and the runner."""

    config: RunConfig
    #: the resolved configuration (written to checkpoints and results)
    resolved: dict[str, Any]
    #: clients of each phase (or functions giving the available ones per round)
    known_pool: Pool
    agnostic_pool: Pool
    #: the known clients (whose models the end-of-known-phase accuracy evaluates)
    known_ids: Sequence[int]
    #: ``on_run_start`` info; ``resume_round`` is added
    info: dict[str, Any]
    signature_bytes_known: int
    cluster_sizes: list[int]
    notes: list[str]
    device: str
    exchanges: str
    initialises: str
    checkpoint: Path | None = None
    resume: bool = False
    #: the server's device, where checkpointed tensors go
    torch_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: extra figures the results report (e.g. the driver's own counters)
    extra_results: Callable[[], dict[str, Any]] | None = None
    #: every client of the phase is scored every this many rounds (resolved, >= 1)
    eval_every: int = 1


def run_federation(
    server: FederationServer, runner: ClientRunner, plan: RunPlan, t0: float | None = None
) -> dict[str, Any]:
    """The known phase, then the agnostic phase; returns the results dict.

    With ``plan.checkpoint``, the run state is written there atomically every
    ``config.checkpoint_every`` rounds and at the end of each phase; with ``plan.resume``
    the run continues from that file (which must come from the same configuration) and
    ends with the same results as an uninterrupted run.

    Keys (accuracies are fractions in [0, 1], bytes are float32 wire bytes). Accuracies
    score every client of the phase (known: every known client; agnostic: every agnostic
    client that has joined) after the rounds :func:`evaluates_at` picks for
    ``plan.eval_every``, in two views: personalised (each client's own model) and, with
    the suffix ``_server``, the server's (the cluster model as the server holds it, with
    the client's values of the layers the method keeps local by design).
    ``known_accuracy`` / ``_server`` (end of the known phase), ``known_accuracy_last10``
    / ``_server`` (mean of the scorings in the phase's last 10 rounds),
    ``agnostic_accuracy_round0`` / ``_server`` (after the first agnostic round),
    ``agnostic_accuracy_last10`` / ``_server``, ``agnostic_accuracy`` / ``_server`` (end
    of the run); per scoring ``<phase>_eval_rounds``, ``<phase>_eval_accuracy`` and
    ``<phase>_eval_accuracy_server``; the round's participants only (the paper's per-round
    figure): ``<phase>_round_accuracy`` and ``<phase>_accuracy_last10_participants``;
    ``upload_bytes`` / ``download_bytes`` (known phase, the paper's *Comm*),
    ``full_model_upload_bytes``, ``learngene_bytes`` (mean cluster learnGene),
    ``init_bytes`` (mean per new client), the ``*_agnostic`` counters, ``wall_seconds``.
    """
    from genefl.engine.simulation import peak_rss_mb

    t0 = time.perf_counter() if t0 is None else t0
    config, resolved, checkpoint = plan.config, plan.resolved, plan.checkpoint
    known_log, agnostic_log = PhaseLog(), PhaseLog()
    extras: dict[str, Any] = {}
    elapsed_before = 0.0
    if plan.resume:
        if checkpoint is None:
            raise ValueError("resume needs a checkpoint path")
        payload = load_checkpoint(checkpoint)
        differences = config_differences(payload["config"], resolved)
        if differences:
            raise ConfigError(
                f"--resume: {checkpoint} was written by a different configuration ("
                + "; ".join(differences[:5]) + "); resume with the run's own config.toml "
                "and no changed options, or start a new run"
            )
        server.load_state_dict(payload["engine"], plan.torch_device)
        runner.load_runner_state_dict(payload["engine"])
        known_log = PhaseLog.from_state(payload["known"])
        agnostic_log = PhaseLog.from_state(payload["agnostic"])
        extras = dict(payload["extras"])
        elapsed_before = float(payload["elapsed"])

    def write_checkpoint(phase: str, log: PhaseLog) -> None:
        every = config.checkpoint_every
        if checkpoint is None or every == 0:
            return
        total = config.known_rounds if phase == "known" else config.agnostic_rounds
        if server.round % every and log.rounds_done != total:
            return
        save_checkpoint(checkpoint, {
            "config": resolved,
            "engine": {**server.state_dict(), **runner.runner_state_dict()},
            "known": known_log.state_dict(),
            "agnostic": agnostic_log.state_dict(),
            "extras": extras,
            "elapsed": elapsed_before + time.perf_counter() - t0,
        })

    info = dict(plan.info)
    info["resume_round"] = server.round
    server.callbacks.on_run_start(info)

    every = max(1, plan.eval_every)
    known = server.run_phase(
        "known", plan.known_pool, config.known_rounds, config.clients_per_round, runner,
        phase_log=known_log, after_round=write_checkpoint, eval_every=every,
        eval_pool=lambda: plan.known_ids,
    )
    if not extras:  # figures of the end of the known phase (kept in later checkpoints)
        extras = server.learngene_summary(config.clusters)
    agn = server.run_phase(
        "agnostic", plan.agnostic_pool, config.agnostic_rounds, config.clients_per_round,
        runner, phase_log=agnostic_log, after_round=write_checkpoint, eval_every=every,
        eval_pool=lambda: sorted(server.state.joined),
    )
    joined = len(server.state.joined)
    known_end = known.last_evaluation()
    known_last = known.evaluations_last(config.known_rounds)
    agn_round0 = agn.evaluation_at(0)
    agn_last = agn.evaluations_last(config.agnostic_rounds)
    agn_end = agn.last_evaluation()
    results: dict[str, Any] = {
        "method": config.method,
        "exchanges": plan.exchanges,
        "initialises": plan.initialises,
        "dataset": config.dataset,
        "seed": config.seed,
        "known_accuracy": known_end[0],
        "known_accuracy_server": known_end[1],
        "known_accuracy_last10": known_last[0],
        "known_accuracy_last10_server": known_last[1],
        "agnostic_accuracy_round0": agn_round0[0],
        "agnostic_accuracy_round0_server": agn_round0[1],
        "agnostic_accuracy_last10": agn_last[0],
        "agnostic_accuracy_last10_server": agn_last[1],
        "agnostic_accuracy": agn_end[0],
        "agnostic_accuracy_server": agn_end[1],
        "known_accuracy_last10_participants": mean_last(known.accuracies),
        "agnostic_accuracy_last10_participants": mean_last(agn.accuracies),
        "eval_every": every,
        "upload_bytes": known.traffic.upload,
        "download_bytes": known.traffic.download,
        "full_model_upload_bytes": known.traffic.full_model_upload,
        "upload_bytes_agnostic": agn.traffic.upload,
        "download_bytes_agnostic": agn.traffic.download + agn.traffic.init,
        "full_model_upload_bytes_agnostic": agn.traffic.full_model_upload,
        "learngene_bytes": float(np.mean(extras["learngene_sizes"])),
        "learngene_layers": extras["learngene_layers"],
        "init_bytes": agn.traffic.init / joined if joined else math.nan,
        "init_bytes_total": agn.traffic.init,
        "signature_bytes": plan.signature_bytes_known + agn.traffic.signature
        + known.traffic.signature,
        "model_bytes": server.model_bytes,
        "num_layers": len(server.layers),
        "agnostic_joined": joined,
        "diverged_updates": known.diverged + agn.diverged,
        "dropped_updates": known.dropped + agn.dropped,
        "rejected_uploads": known.rejected + agn.rejected,
        "known_round_accuracy": known.accuracies,
        "known_round_upload_bytes": known.round_uploads,
        "agnostic_round_accuracy": agn.accuracies,
        "known_eval_rounds": known.eval_rounds,
        "known_eval_accuracy": known.eval_accuracy,
        "known_eval_accuracy_server": known.eval_accuracy_server,
        "agnostic_eval_rounds": agn.eval_rounds,
        "agnostic_eval_accuracy": agn.eval_accuracy,
        "agnostic_eval_accuracy_server": agn.eval_accuracy_server,
        "cluster_sizes": list(plan.cluster_sizes),
        "algorithm": server.algorithm.summary(),
        "device": plan.device,
        "notes": list(plan.notes),
        "wall_seconds": elapsed_before + time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "workers": plan.info.get("workers", 1),
        "threads_per_worker": plan.info.get("threads_per_worker"),
    }
    if plan.extra_results is not None:
        results.update(plan.extra_results())
    server.callbacks.on_run_end(results)
    return results
