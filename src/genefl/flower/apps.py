"""Flower ServerApp / ClientApp around one :class:`~genefl.algorithms.base.Algorithm`.

What crosses the wire, per participant and round (Flower ``Message`` of type ``train``):

* server -> client: ``received`` (``ArrayRecord``: the float32 tensors of
  ``algorithm.download_layers(cluster, phase)`` of its cluster model, packed with
  :func:`genefl.engine.wire.pack`) and ``config`` (``ConfigRecord``: ``client-id``,
  ``cluster``, ``round``, ``phase`` and the algorithm's ``instructions``);
* client -> server: ``upload`` (``ArrayRecord``: the float32 tensors of the layers the
  client chose), ``masks`` (``ArrayRecord`` of bool arrays, only for partial uploads) and
  ``result`` (``ConfigRecord``: layer names, sample counts, accuracies, loss, diverged).

Before the first round the server sends each node one ``query`` message and learns which
client (Flower ``partition-id``) it hosts. A client keeps its own model and the
algorithm's per-client extras in its ``Context.state`` between rounds; they never leave
the node. Only the known phase (no joins) is implemented.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genefl.algorithms.base import Algorithm, ClientContext, RoundReport, Upload
from genefl.engine.client import client_update
from genefl.engine.local import LocalSettings
from genefl.engine.rounds import (
    ClientTensors,
    ServerState,
    aggregate_clusters,
    sample_participants,
)
from genefl.engine.validate import upload_problem
from genefl.engine.wire import pack, payload_bytes, select_layers, unpack
from genefl.models.layers import Layer
from genefl.seeding import numpy_rng, torch_generator
from genefl.types import ParamDict

INSTALL_HINT = (
    "Flower is not installed: pip install 'genefl[flower]' (from a checkout: "
    "pip install -e '.[flower]')"
)


def require_flwr() -> None:
    """Raise ``ImportError`` naming the install command when Flower is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc


@dataclass
class FlowerRun:
    """What the server app records while it runs (read it after ``run_simulation``)."""

    #: upload bytes per round, counted with :func:`genefl.engine.wire.payload_bytes`
    round_uploads: list[int] = field(default_factory=list)
    #: sample-weighted test accuracy of the participants per round
    accuracies: list[float] = field(default_factory=list)
    #: seconds of the rounds alone (from the first train message to the last aggregation)
    rounds_s: float = math.nan
    rejected: int = 0
    diverged: int = 0


def _arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def _array_record(arrays: Mapping[str, np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _dump(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def build_apps(
    algorithm: Algorithm,
    make_model: Callable[[], nn.Module],
    layers: Sequence[Layer],
    clients: Mapping[int, ClientTensors],
    server: ServerState,
    initial: ParamDict,
    settings: LocalSettings,
    seed: int,
    rounds: int,
    per_round: int,
    phase: str = "known",
) -> tuple[Any, Any, FlowerRun]:
    """``(server_app, client_app, run)``: ``rounds`` rounds over ``clients`` (client id ==
    Flower ``partition-id``, so run with ``num_supernodes=len(clients)``), sampling
    ``per_round`` of them per round with the engine's sampling stream. The server updates
    ``server.cluster_models`` and ``algorithm`` in place; ``run`` collects the figures.
    The client app closes over ``clients`` (each node reads only its own entry).
    """
    require_flwr()
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    layer_map = {layer.name: layer for layer in layers}
    run = FlowerRun()
    client_app = ClientApp()
    server_app = ServerApp()
    scratch: dict[str, nn.Module] = {}

    @client_app.query()
    def who(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        return Message(RecordDict({"node": ConfigRecord({"client-id": pid})}), reply_to=msg)

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        config = msg.content["config"]
        cid, k, rnd = int(config["client-id"]), int(config["cluster"]), int(config["round"])
        if cid != int(context.node_config["partition-id"]):
            raise ValueError(f"node of client {context.node_config['partition-id']} got {cid}")
        instructions = {n[len("i."):]: v for n, v in config.items() if n.startswith("i.")}
        data = clients[cid]
        state = context.state
        extras = (
            torch.load(io.BytesIO(state["genefl.extras"]["blob"]), weights_only=False)
            if "genefl.extras" in state else {}
        )
        own = unpack(_arrays(state["genefl.own"])) if "genefl.own" in state else None
        ctx = ClientContext(
            client_id=cid, cluster=k, round=rnd, phase=str(config["phase"]),
            instructions=instructions, num_samples=int(data.train.y.shape[0]), state=extras,
            generator=torch_generator(seed, "train", rnd, cid),
            rng=numpy_rng(seed, "algorithm", rnd, cid),
        )
        if "model" not in scratch:
            scratch["model"] = make_model()
        received = unpack(_arrays(msg.content["received"]))
        result = client_update(
            algorithm, scratch["model"], layers, layer_map, data.train, data.val, data.test,
            received, own, initial, settings, ctx,
        )
        if result.after is not None:
            state["genefl.own"] = _array_record(pack(result.after))
            state["genefl.extras"] = ConfigRecord({"blob": _dump(ctx.state)})
        upload = result.upload
        content = RecordDict({"result": ConfigRecord({
            "layers": list(upload.layers) if upload is not None else [],
            "diverged": result.stats.diverged, "num-samples": ctx.num_samples,
            "test-acc": result.test_accuracy, "val-acc": result.val_accuracy,
            "num-test": int(data.test.y.shape[0]), "num-val": int(data.val.y.shape[0]),
            "loss": result.stats.mean_loss,
        })})
        if upload is not None:
            content["upload"] = _array_record(pack(upload.params))
            if upload.masks:
                content["masks"] = _array_record(
                    {n: m.cpu().numpy().astype(bool) for n, m in upload.masks.items()}
                )
        return Message(content, reply_to=msg)

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = list(grid.get_node_ids())
        while len(nodes) < len(clients):
            time.sleep(0.05)
            nodes = list(grid.get_node_ids())
        queries = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
        node_of = {
            int(r.content["node"]["client-id"]): r.metadata.src_node_id
            for r in grid.send_and_receive(queries)
        }
        client_of = {n: c for c, n in node_of.items()}
        ids = sorted(clients)
        t0 = time.perf_counter()
        for rnd in range(rounds):
            participants = sample_participants(seed, phase, rnd, ids, per_round)
            instructions = algorithm.instructions(rnd, phase)
            messages = []
            for cid in participants:
                k = server.assignment[cid]
                sent = select_layers(
                    server.cluster_models[k], layer_map, algorithm.download_layers(k, phase)
                )
                config = ConfigRecord({
                    "client-id": cid, "cluster": k, "round": rnd, "phase": phase,
                    **{f"i.{n}": v for n, v in instructions.items() if v is not None},
                })
                content = RecordDict({"received": _array_record(pack(sent)), "config": config})
                messages.append(Message(content, dst_node_id=node_of[cid], message_type="train"))
            replies = {}
            for reply in grid.send_and_receive(messages):
                if reply.has_error():
                    raise RuntimeError(f"Flower client failed: {reply.error}")
                replies[client_of[reply.metadata.src_node_id]] = reply
            uploads: list[Upload] = []
            chosen: dict[int, list[tuple[str, ...]]] = {}
            up_bytes = 0
            correct = n_test = val_correct = n_val = 0.0
            for cid in participants:
                content = replies[cid].content
                res = content["result"]
                if bool(res["diverged"]):
                    run.diverged += 1
                    continue
                k = server.assignment[cid]
                params = unpack(_arrays(content["upload"]))
                masks = (
                    {n: torch.from_numpy(a.copy()) for n, a in _arrays(content["masks"]).items()}
                    if "masks" in content else {}
                )
                upload = Upload(cid, k, tuple(res["layers"]), params, int(res["num-samples"]),
                                masks)
                up_bytes += payload_bytes(params, masks)
                correct += float(res["test-acc"]) * int(res["num-test"])
                n_test += int(res["num-test"])
                if int(res["num-val"]):
                    val_correct += float(res["val-acc"]) * int(res["num-val"])
                    n_val += int(res["num-val"])
                problem = upload_problem(
                    upload, server.cluster_models[k], layer_map,
                    algorithm.allowed_upload_layers(k), math.inf,
                )
                if problem is not None:
                    run.rejected += 1
                    continue
                uploads.append(upload)
                chosen.setdefault(k, []).append(upload.layers)
            aggregate_clusters(algorithm, server, uploads)
            val_acc = val_correct / n_val if n_val else math.nan
            algorithm.end_round(RoundReport(rnd, phase, uploads, val_acc, chosen))
            run.round_uploads.append(up_bytes)
            run.accuracies.append(correct / n_test if n_test else math.nan)
        run.rounds_s = time.perf_counter() - t0

    return server_app, client_app, run
