"""The genefl ClientApp: one SuperNode hosts one client of the federation.

Messages it answers (all from :mod:`genefl.flower.server_app`):

* ``query`` with ``config.what = "hello"``: which client it hosts (``client-id``,
  ``kind``) and the newest round whose state it keeps (``state-round``, -1: none);
* ``query`` with ``what = "signature"``: its data signature, the ``(features, p)``
  basis of :func:`~genefl.method.cluster.subspace_basis` (``ArrayRecord`` ``signature``,
  sent as float64 so that the clustering is the in-process one; counted as 4 bytes per
  float like every payload);
* ``train``: ``received`` (the download layers of its cluster model), optionally
  ``package`` (the learnGene it initialises from when it joins), and ``config``
  (round, phase, cluster, the algorithm's instructions); it runs
  :func:`~genefl.engine.client.client_update` and answers with ``upload`` (exactly the
  tensors of the layers it chose), ``masks`` for partial uploads, and ``result``;
* ``evaluate`` (after round ``config.round``'s training): the test predictions of its own
  model (or of the model it would start from ``received``) as ``correct``, and of that
  model overlaid with the ``server`` tensors (the server view) as ``server-correct``, out
  of ``total``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from genefl.algorithms.base import ClientContext
from genefl.engine.client import client_context, client_drops_out, client_update
from genefl.engine.local import LocalSettings, evaluate
from genefl.engine.wire import pack, unpack
from genefl.flower.apps import array_record, arrays, require_flwr
from genefl.flower.node import ClientSide, NodeStore, load_client
from genefl.flower.runconfig import node_spec, options_from_run_config
from genefl.method.cluster import subspace_basis
from genefl.models.layers import set_params

#: prefix of the algorithm's instructions in a train message's config
INSTRUCTION = "i."


def _side(context: Any, defaults: Mapping[str, Any]) -> ClientSide:
    config, params, _ = options_from_run_config({**defaults, **context.run_config})
    return load_client(node_spec(context.node_config, config), config, params)


def _ctx(side: ClientSide, cluster: int, rnd: int, phase: str, instructions: dict,
         extras: dict[str, Any]) -> ClientContext:
    return client_context(side.config.seed, side.spec.client_id, cluster, rnd, phase,
                          instructions, len(side.data.train), dict(extras))


def _store(side: ClientSide, context: Any) -> NodeStore:
    return NodeStore(context.state, side.spec.state_dir, side.spec.client_id, side.device,
                     side.run_key)


def make_client_app(defaults: Mapping[str, Any] | None = None) -> Any:
    """A ClientApp; ``defaults`` are run config values under the run's own (Flower's
    simulation engine passes an empty run config, so tests and benchmarks give theirs
    here).
    """
    require_flwr()
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp

    base = dict(defaults or {})
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        side = _side(context, base)
        what = str(msg.content["config"]["what"])
        if what == "hello":
            store = _store(side, context)
            reply = RecordDict({"node": ConfigRecord({
                "client-id": side.spec.client_id, "kind": side.spec.kind,
                "state-round": store.newest(),
            })})
        elif what == "signature":
            basis = subspace_basis(side.data.pixels, side.config.signature_dim)
            reply = RecordDict({
                "signature": array_record({"basis": np.asarray(basis)}),
                "sizes": ConfigRecord({"num-train": int(side.data.train.y.shape[0]),
                                       "num-test": int(side.data.test.y.shape[0])}),
            })
        else:
            raise ValueError(f"unknown query {what!r}")
        return Message(reply, reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        side = _side(context, base)
        config = msg.content["config"]
        cid, k = int(config["client-id"]), int(config["cluster"])
        rnd, phase = int(config["round"]), str(config["phase"])
        keep_from = int(config["keep-from"])
        if cid != side.spec.client_id:
            raise ValueError(f"node of client {side.spec.client_id} was sent client {cid}")
        instructions = {n[len(INSTRUCTION):]: v for n, v in config.items()
                        if n.startswith(INSTRUCTION)}
        store = _store(side, context)
        algo, data, dev = side.algorithm, side.data, side.device
        if "package" in msg.content:  # joins now: fresh weights overlaid with the learnGene
            package = unpack(arrays(msg.content["package"]), dev)
            ctx = _ctx(side, k, rnd, phase, {}, {})
            own = algo.init_new_client(side.fresh(cid), package, ctx)
            extras = ctx.state
        else:
            kept = store.latest(rnd)
            own, extras = kept if kept is not None else (None, {})
        ctx = _ctx(side, k, rnd, phase, instructions, extras)
        if client_drops_out(side.config.seed, side.config.dropout_rate, rnd, cid):
            if "package" in msg.content:
                store.save(rnd, own, extras, keep_from)
            return Message(RecordDict({"result": ConfigRecord({
                "status": "dropped", "num-samples": ctx.num_samples,
            })}), reply_to=msg)
        received = unpack(arrays(msg.content["received"]), dev)
        result = client_update(
            algo, side.model, side.layers, side.layer_map, data.train, data.val, data.test,
            received, own, side.initial, LocalSettings.from_config(side.config), ctx,
        )
        if result.after is not None:
            store.save(rnd, result.after, ctx.state, keep_from)
        elif "package" in msg.content:
            store.save(rnd, own, extras, keep_from)
        upload = result.upload
        summary = {
            "status": "diverged" if upload is None else "ok",
            "layers": list(upload.layers) if upload is not None else [],
            "num-samples": ctx.num_samples,
            "test-acc": result.test_accuracy, "val-acc": result.val_accuracy,
            "num-test": int(data.test.y.shape[0]), "num-val": int(data.val.y.shape[0]),
            "loss": result.stats.mean_loss,
            "metric-names": list(result.metrics),
            "metric-values": [float(v) for v in result.metrics.values()],
        }
        content = RecordDict({"result": ConfigRecord(summary)})
        if upload is not None:
            content["upload"] = array_record(pack(upload.params))
            if upload.masks:
                content["masks"] = array_record(
                    {n: m.cpu().numpy().astype(bool) for n, m in upload.masks.items()}
                )
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate_own(msg: Message, context: Context) -> Message:
        side = _side(context, base)
        config = msg.content["config"]
        rnd, k = int(config["round"]), int(config["cluster"])
        kept = _store(side, context).latest(rnd + 1)  # scored after round rnd's training
        if kept is not None:
            params = kept[0]
        else:
            received = unpack(arrays(msg.content["received"]), side.device)
            ctx = _ctx(side, k, rnd, "eval", {}, {})
            params = side.algorithm.start_params(received, None, side.initial, ctx)
        test = side.data.test
        n = int(test.y.shape[0])
        set_params(side.model, params)
        correct = evaluate(side.model, test.x, test.y) * n
        set_params(side.model, unpack(arrays(msg.content["server"]), side.device))
        server_correct = evaluate(side.model, test.x, test.y) * n
        return Message(RecordDict({"result": ConfigRecord({
            "correct": float(correct), "server-correct": float(server_correct), "total": n,
        })}), reply_to=msg)

    return app


#: the ClientApp of ``flwr run`` (components ``genefl.flower.client_app:app``)
app = make_client_app()
