"""The genefl ServerApp: the federation's server (:mod:`genefl.engine.server`) on Flower.

The ServerApp runs :func:`~genefl.engine.server.run_federation` with
:class:`FlowerClients` as its :class:`~genefl.engine.server.ClientRunner`: the same
sampling, joins, validation, aggregation, byte counting, checkpoints and files as
``genefl run``; only the clients' work travels as Flower messages (see
:mod:`genefl.flower.client_app` for what each message carries).

A run, with ``N`` known and ``M`` agnostic clients:

1. the server waits (``node-wait`` s) for a node of every known client, asks each for
   its signature (``query``) and clusters them; a known client whose node is not there
   by then joins later like a new client (nearest centre, learnGene);
2. known phase: each round samples ``clients-per-round`` of the known clients whose
   nodes are connected (``grid.get_node_ids()`` is polled every round, so nodes that
   connect later are found and sampled from then on); with every node connected the
   draw is the in-process engine's. An agnostic node that connects now is registered
   and held until the agnostic phase;
3. agnostic phase: an agnostic client is asked for its signature when it is first
   sampled, matched to the nearest centre (running-mean update) and sent its cluster's
   learnGene with its first ``train`` message, as in-process.

A round closes when every participant has answered or ``round-timeout`` s have passed;
a participant that has not answered (or whose node is gone, or whose ClientApp failed)
counts as a dropout: its download is counted, nothing uploaded. Node events (connected,
gone, back, timed out) go to ``nodes.jsonl`` in the output directory and to Flower's
log. A client whose node comes back (a new node with the same ``client-id``) is
sampled again; it keeps its model if the node has a ``state-dir`` (or never stopped),
otherwise it starts afresh: a known client from its cluster's model, an agnostic one
from its cluster's learnGene, sent again with its next ``train`` message (counted as
download). A killed ServerApp resumes from the checkpoint in its output directory on
the next ``flwr run`` with the same run config.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genefl.algorithms.base import Upload
from genefl.callbacks.base import Callback, ClientRoundRecord, RoundRecord
from genefl.config import RunConfig, dump_toml, resolved_dict
from genefl.data.datasets import dataset_shape
from genefl.data.federation import federation_notes, split_classes
from genefl.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint
from genefl.engine.server import (
    ClientOutcome,
    FederationServer,
    RoundPlan,
    RunPlan,
    ServerState,
    cluster_signatures,
    dropped_outcome,
    initial_state,
    run_federation,
    signature_bytes,
)
from genefl.engine.simulation import (
    make_algorithm,
    model_parts,
    params_digest,
    resolve_device,
    resolve_eval_every,
)
from genefl.engine.wire import pack, payload_bytes, unpack
from genefl.errors import ConfigError
from genefl.flower.apps import array_record, arrays, require_flwr
from genefl.flower.client_app import INSTRUCTION
from genefl.flower.runconfig import FlowerOptions, options_from_run_config
from genefl.seeding import numpy_rng
from genefl.types import ParamDict

NODES_FILE = "nodes.jsonl"
#: seconds between two looks at the connected nodes while waiting for some
POLL_S = 0.5


def _flwr_log(level: int, message: str, *args: Any) -> None:
    from flwr.common.logger import log

    log(level, "genefl: " + message, *args)


class FlowerClients:
    """The clients of a federation, reached through a Flower ``Grid``."""

    def __init__(self, grid: Any, config: RunConfig, options: FlowerOptions,
                 events: Path | None = None) -> None:
        self.grid = grid
        self.config = config
        self.options = options
        self.events = events
        #: set once the server exists (to resend a learnGene)
        self.server: FederationServer | None = None
        self.node_of: dict[int, int] = {}
        self.client_of: dict[int, int] = {}
        #: nodes that refused or never answered the hello query
        self.ignored: set[int] = set()
        #: clients that trained at least once, and those whose node came back without
        #: their state (an agnostic one is sent its learnGene again)
        self.trained: set[int] = set()
        self.lost_state: set[int] = set()
        self.device = torch.device("cpu")
        #: the clustering's figures (kept in checkpoints)
        self.clustering: dict[str, Any] = {}
        #: training and test sizes each client reported with its signature
        self.sizes: dict[int, tuple[int, int]] = {}

    # -- events ------------------------------------------------------------------------
    def event(self, name: str, level: int = 20, **fields: Any) -> None:
        """Log a node event to Flower's log and ``nodes.jsonl``."""
        rnd = self.server.round if self.server is not None else -1
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        _flwr_log(level, "round %d: %s %s", rnd, name, text)
        if self.events is not None:
            with self.events.open("a") as fh:
                fh.write(json.dumps({"time": time.time(), "round": rnd, "event": name,
                                     **fields}) + "\n")

    # -- nodes -------------------------------------------------------------------------
    def _send(self, messages: list[Any]) -> dict[int, Any]:
        """Send and wait (``round-timeout``); replies by source node, errors included."""
        if not messages:
            return {}
        replies = self.grid.send_and_receive(messages, timeout=self.options.round_timeout)
        return {int(r.metadata.src_node_id): r for r in replies}

    def _query(self, nodes: Sequence[int], what: str) -> dict[int, Any]:
        from flwr.app import ConfigRecord, Message, RecordDict

        messages = [
            Message(RecordDict({"config": ConfigRecord({"what": what})}), dst_node_id=n,
                    message_type="query")
            for n in nodes
        ]
        return self._send(messages)

    def refresh(self) -> None:
        """Look at the connected nodes: forget those gone, greet new ones."""
        live = {int(n) for n in self.grid.get_node_ids()}
        for node in [n for n in self.client_of if n not in live]:
            cid = self.client_of.pop(node)
            if self.node_of.get(cid) == node:
                del self.node_of[cid]
                self.event("node-gone", 30, node=node, client=cid)
        new = sorted(live - set(self.client_of) - self.ignored)
        if not new:
            return
        replies = self._query(new, "hello")
        for node in new:
            reply = replies.get(node)
            if reply is None or reply.has_error():
                self.ignored.add(node)
                reason = "no answer" if reply is None else str(reply.error.reason)
                self.event("node-ignored", 30, node=node, reason=reason)
                continue
            hello = reply.content["node"]
            cid, kind = int(hello["client-id"]), str(hello["kind"])
            state_round = int(hello["state-round"])
            old = self.node_of.get(cid)
            if old is not None:
                self.client_of.pop(old, None)
            back = cid in self.trained
            self.node_of[cid], self.client_of[node] = node, cid
            if back and state_round < 0:
                self.lost_state.add(cid)
            self.event("node-back" if back else "node-joined", node=node, client=cid,
                       kind=kind, state_round=state_round)

    def live(self, known: bool) -> list[int]:
        """Connected clients of one kind, sorted."""
        n = self.config.known_clients
        return sorted(c for c in self.node_of if (c < n) == known)

    def wait_for(self, known: bool, target: int, at_least: int) -> list[int]:
        """Wait up to ``node-wait`` s for ``target`` connected clients of a kind; at
        least ``at_least`` must be there by then (else a :class:`ConfigError`).
        """
        deadline = time.monotonic() + self.options.node_wait
        while True:
            self.refresh()
            ids = self.live(known)
            if len(ids) >= target:
                return ids
            if time.monotonic() >= deadline:
                if len(ids) >= at_least:
                    return ids
                kind = "known" if known else "agnostic"
                raise ConfigError(
                    f"only {len(ids)} {kind} node(s) connected within node-wait="
                    f"{self.options.node_wait:g} s; at least {at_least} needed"
                )
            time.sleep(POLL_S)

    def pool(self, phase: str, phase_round: int) -> list[int]:
        """The clients a round samples from: the phase's connected clients."""
        known = phase == "known"
        c = self.config
        total = c.known_clients if known else c.agnostic_clients
        target = total if self.options.wait_for_all else min(c.clients_per_round, total)
        return self.wait_for(known, target, 1)

    # -- signatures --------------------------------------------------------------------
    def bases(self, client_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Signature bases of the clients that answer."""
        nodes = {self.node_of[c]: c for c in client_ids if c in self.node_of}
        out = {}
        for node, reply in self._query(list(nodes), "signature").items():
            cid = nodes.get(node)
            if cid is None:
                continue
            if reply.has_error():
                self.event("client-failed", 30, client=cid, error=str(reply.error.reason))
                continue
            out[cid] = np.asarray(arrays(reply.content["signature"])["basis"])
            if "sizes" in reply.content:
                sizes = reply.content["sizes"]
                self.sizes[cid] = (int(sizes["num-train"]), int(sizes["num-test"]))
        for cid in client_ids:
            if cid not in out:
                self.event("no-signature", 30, client=cid)
        return out

    def signatures(self, client_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Flattened signatures of joining clients (ClientRunner)."""
        return {c: b.flatten(order="F") for c, b in self.bases(client_ids).items()}

    # -- rounds ------------------------------------------------------------------------
    def keep_from(self, rnd: int) -> int:
        """The earliest round a resumed server could restart at (nodes keep the state
        needed from there).
        """
        return max(0, rnd - max(1, self.config.checkpoint_every))

    def train(self, plan: RoundPlan) -> list[ClientOutcome]:
        """Send every participant its ``train`` message, wait, read the replies."""
        from flwr.app import ConfigRecord, Message, RecordDict

        outcomes: dict[int, ClientOutcome] = {}
        sent: dict[int, int] = {}
        messages = []
        instructions = {f"{INSTRUCTION}{k}": v for k, v in plan.instructions.items()
                        if v is not None}
        for i, task in enumerate(plan.tasks):
            cid = task.client_id
            node = self.node_of.get(cid)
            if node is None:
                self.event("client-unreachable", 30, client=cid)
                outcomes[i] = dropped_outcome(task, plan)
                continue
            package = task.package
            if package is None and cid in self.lost_state and self.server is not None \
                    and cid in self.server.state.joined:
                package = self.server.package(cid)  # its node lost the learnGene init
                task.download_bytes += payload_bytes(package)
            content = RecordDict({
                "config": ConfigRecord({
                    "client-id": cid, "cluster": task.cluster, "round": plan.round,
                    "phase": plan.phase, "keep-from": self.keep_from(plan.round),
                    **instructions,
                }),
                "received": array_record(pack(task.received)),
            })
            if package is not None:
                content["package"] = array_record(pack(package))
            messages.append(Message(content, dst_node_id=node, message_type="train",
                                    group_id=str(plan.round)))
            sent[node] = i
        replies = self._send(messages)
        for node, i in sent.items():
            task = plan.tasks[i]
            reply = replies.get(node)
            if reply is None:
                self.event("round-timeout", 30, client=task.client_id, node=node,
                           timeout_s=self.options.round_timeout)
                outcomes[i] = dropped_outcome(task, plan)
            elif reply.has_error():
                self.event("client-failed", 30, client=task.client_id, node=node,
                           error=str(reply.error.reason))
                outcomes[i] = dropped_outcome(task, plan)
            else:
                outcomes[i] = self._outcome(task, plan, reply.content)
                self.trained.add(task.client_id)
                self.lost_state.discard(task.client_id)
        return [outcomes[i] for i in range(len(plan.tasks))]

    def _outcome(self, task: Any, plan: RoundPlan, content: Any) -> ClientOutcome:
        res = content["result"]
        status = str(res["status"])
        if status == "dropped":
            return dropped_outcome(task, plan, int(res["num-samples"]))
        upload = None
        up_bytes = 0
        if status == "ok":
            params = unpack(arrays(content["upload"]), self.device)
            masks = (
                {n: torch.from_numpy(a.copy()).to(self.device)
                 for n, a in arrays(content["masks"]).items()}
                if "masks" in content else {}
            )
            upload = Upload(task.client_id, task.cluster, tuple(res["layers"]), params,
                            int(res["num-samples"]), masks)
            up_bytes = payload_bytes(params, masks)
        record = ClientRoundRecord(
            round=plan.round, phase=plan.phase, client_id=task.client_id,
            cluster=task.cluster, joined=False, num_train=int(res["num-samples"]),
            test_accuracy=float(res["test-acc"]), val_accuracy=float(res["val-acc"]),
            train_loss=float(res["loss"]), diverged=status == "diverged",
            upload_layers=upload.layers if upload is not None else (),
            upload_bytes=up_bytes, download_bytes=task.download_bytes, init_bytes=0,
            metrics={str(k): float(v) for k, v in
                     zip(res["metric-names"], res["metric-values"])},
        )
        return ClientOutcome(upload, record, int(res["num-test"]), int(res["num-val"]))

    def evaluate(
        self, client_ids: Sequence[int], received_for: Callable[[int], ParamDict],
        server_view_for: Callable[[int], ParamDict],
    ) -> tuple[float, float, float]:
        """``(correct, server_correct, total)`` over the clients whose nodes answer
        ``evaluate``; the node overlays the ``server`` tensors on its model for the server
        view.
        """
        from flwr.app import ConfigRecord, Message, RecordDict

        assert self.server is not None
        self.refresh()  # a resumed server may evaluate before any round looked at nodes
        messages, asked = [], {}
        for cid in client_ids:
            node = self.node_of.get(cid)
            if node is None or cid not in self.server.state.assignment:
                self.event("client-unreachable", 30, client=cid)
                continue
            content = RecordDict({
                "config": ConfigRecord({"round": self.server.round,
                                        "cluster": self.server.state.assignment[cid]}),
                "received": array_record(pack(received_for(cid))),
                "server": array_record(pack(server_view_for(cid))),
            })
            messages.append(Message(content, dst_node_id=node, message_type="evaluate"))
            asked[node] = cid
        correct = server_correct = total = 0.0
        replies = self._send(messages)
        for node, cid in asked.items():
            reply = replies.get(node)
            if reply is None or reply.has_error():
                self.event("evaluation-missing", 30, client=cid)
                continue
            correct += float(reply.content["result"]["correct"])
            server_correct += float(reply.content["result"]["server-correct"])
            total += int(reply.content["result"]["total"])
        return correct, server_correct, total

    # -- checkpoints -------------------------------------------------------------------
    def runner_state_dict(self) -> dict[str, Any]:
        """The clustering's figures and the clients that trained."""
        return {"flower": {**self.clustering, "trained": sorted(self.trained)}}

    def load_runner_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`runner_state_dict`."""
        saved = state["flower"]
        self.trained = {int(c) for c in saved["trained"]}
        self.clustering = {k: v for k, v in saved.items() if k != "trained"}


class RoundLog(Callback):
    """One line per round in Flower's log."""

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        _flwr_log(20, "round %d (%s %d): %d participants, accuracy %.4f, upload %d B, "
                  "dropped %d, rejected %d", record.round, record.phase, record.phase_round,
                  record.participants, record.accuracy, record.upload_bytes, record.dropped,
                  record.rejected)


def output_dir(config: RunConfig, options: FlowerOptions) -> Path:
    """The run's output directory (created); refuses one holding finished results."""
    if config.output_dir:
        out = Path(config.output_dir)
    else:
        out = Path("runs") / f"flower-{config.method}-{config.dataset}-" \
                             f"{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / "results.json").exists() and not options.overwrite:
        raise ConfigError(
            f"output-dir {out} already holds results.json; choose another directory or "
            "set overwrite=true"
        )
    if options.overwrite and (out / "results.json").exists():
        for name in ("results.json", CHECKPOINT_FILE, "nodes.jsonl"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_server(grid: Any, run_config: Mapping[str, Any],
               callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """The whole run on ``grid`` with this run config; returns the results dict.

    Writes ``config.toml``, ``rounds.csv``, ``clients.jsonl``, ``results.json``,
    ``nodes.jsonl`` and ``checkpoint.pt`` into the run's ``output-dir``; with a
    checkpoint there (and no ``results.json``) the run resumes from it.
    """
    from genefl.callbacks import ClientLog, ResultsJSON, RoundsCSV

    t0 = time.perf_counter()
    config, params, options = options_from_run_config(run_config)
    resolved = resolved_dict(config, params)
    out = output_dir(config, options)
    checkpoint = out / CHECKPOINT_FILE
    resume = checkpoint.exists()
    if not resume:
        (out / "config.toml").write_text(
            "# resolved configuration of this run (usable with --config)\n"
            + dump_toml(resolved)
        )
    device = resolve_device(config.device)
    shape, num_classes = dataset_shape(config.dataset, config.data_dir, config.image_size)
    _, layers, initial, _ = model_parts(config, shape, num_classes, device)
    algorithm = make_algorithm(config, params, layers)
    known_classes, agnostic_classes = split_classes(
        num_classes, numpy_rng(config.seed, "federation")
    )
    notes = federation_notes(config.dataset, known_classes, agnostic_classes,
                             config.partition, config.shards)
    n = config.known_clients
    known_ids = list(range(n))
    runner = FlowerClients(grid, config, options, out / NODES_FILE)
    runner.device = device
    if resume:
        runner.load_runner_state_dict(load_checkpoint(checkpoint)["engine"])
        k = config.clusters
        state = ServerState([dict(initial) for _ in range(k)], np.zeros((k, 1)), [0] * k, {})
        runner.event("resume", checkpoint=str(checkpoint))
    else:
        present = runner.wait_for(True, n, config.clusters)
        bases = runner.bases(present)
        clustered = [c for c in present if c in bases]
        if len(clustered) < config.clusters:
            raise ConfigError(
                f"only {len(clustered)} known client(s) sent a signature; clusters="
                f"{config.clusters} needs at least as many"
            )
        labels, centers = cluster_signatures([bases[c] for c in clustered], config)
        state = initial_state(clustered, labels, centers, initial, config.clusters)
        runner.clustering = {
            "signature_bytes_known": sum(signature_bytes(bases[c]) for c in clustered),
            "cluster_sizes": [int((labels == k).sum()) for k in range(config.clusters)],
            "clustered": clustered,
            "eval_every": resolve_eval_every(
                config, [runner.sizes[c][0] for c in clustered if c in runner.sizes],
                [runner.sizes[c][1] for c in clustered if c in runner.sizes],
            ),
        }
    server = FederationServer(
        algorithm, layers, state, config.seed,
        [RoundsCSV(out / "rounds.csv"), ClientLog(out / "clients.jsonl"),
         ResultsJSON(out / "results.json"), RoundLog(), *callbacks],
        config.max_update_ratio,
    )
    runner.server = server
    cluster_sizes = list(runner.clustering["cluster_sizes"])
    info = {
        "config": resolved,
        "device": str(device),
        "layers": [layer.name for layer in layers],
        "model_bytes": server.model_bytes,
        "initial_weights_sha256": params_digest(initial),
        "known_classes": list(known_classes),
        "agnostic_classes": list(agnostic_classes),
        "cluster_sizes": cluster_sizes,
        "notes": notes,
        "total_rounds": config.known_rounds + config.agnostic_rounds,
    }
    algo_cls = type(algorithm)
    plan = RunPlan(
        config=config, resolved=resolved, known_pool=runner.pool, agnostic_pool=runner.pool,
        known_ids=known_ids, info=info,
        signature_bytes_known=int(runner.clustering["signature_bytes_known"]),
        cluster_sizes=cluster_sizes, notes=notes, device=str(device),
        exchanges=algo_cls.exchanges, initialises=algo_cls.initialises,
        checkpoint=checkpoint, resume=resume, torch_device=device,
        eval_every=int(runner.clustering["eval_every"]),
    )
    results = run_federation(server, runner, plan, t0)
    runner.event("finished", agnostic_joined=results["agnostic_joined"],
                 dropped=results["dropped_updates"], seconds=round(time.perf_counter() - t0, 2))
    if math.isnan(results["known_accuracy"]):
        _flwr_log(30, "no known client answered the final evaluation")
    return results


def make_server_app(defaults: Mapping[str, Any] | None = None,
                    callbacks: Sequence[Callback] = ()) -> Any:
    """A ServerApp; ``defaults`` are run config values under the run's own (Flower's
    simulation engine passes an empty run config), ``callbacks`` see the run as in
    ``genefl run``.
    """
    require_flwr()
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp

    base = dict(defaults or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, {**base, **context.run_config}, callbacks)

    return app


#: the ServerApp of ``flwr run`` (components ``genefl.flower.server_app:app``)
app = make_server_app()
