"""One FedAvg round over small numpy vectors, reporting which SuperNodes took part.

The ServerApp queries every connected SuperNode for its node config, sends each a
``train`` message with a global vector, averages the replies weighted by the number of
examples each node reports, and writes a JSON report to ``out-file`` (run config)::

    {"nodes": {node_id: node_config, ...}, "average": [...], "expected": [...]}

Each ClientApp returns ``global + partition-id + 1`` with ``num-examples = partition-id
+ 1``, so the weighted average is known in closed form and the test can check it.
"""

from __future__ import annotations

import json
import time

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

DIM = 4

client_app = ClientApp()
server_app = ServerApp()


@client_app.query()
def query(msg: Message, context: Context) -> Message:
    """Reply with this SuperNode's node config (as strings)."""
    cfg = {str(k): str(v) for k, v in context.node_config.items()}
    return Message(RecordDict({"node-config": ConfigRecord(cfg)}), reply_to=msg)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Return ``global + partition-id + 1`` and ``num-examples = partition-id + 1``."""
    pid = int(context.node_config["partition-id"])
    vec = msg.content["arrays"]["vec"].numpy()
    out = ArrayRecord({"vec": Array(np.asarray(vec + pid + 1, dtype=np.float64))})
    metrics = MetricRecord({"num-examples": pid + 1})
    return Message(RecordDict({"arrays": out, "metrics": metrics}), reply_to=msg)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Query all nodes, run one weighted-average round, write the report."""
    out_file = str(context.run_config["out-file"])
    min_nodes = int(context.run_config["min-nodes"])
    deadline = time.monotonic() + float(context.run_config["wait-nodes-s"])
    nodes = sorted(grid.get_node_ids())
    while len(nodes) < min_nodes and time.monotonic() < deadline:
        time.sleep(0.2)
        nodes = sorted(grid.get_node_ids())
    if len(nodes) < min_nodes:
        raise RuntimeError(f"only {len(nodes)} of {min_nodes} SuperNodes connected")

    queries = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    configs = {}
    for reply in grid.send_and_receive(queries, timeout=60):
        if reply.has_error():
            raise RuntimeError(f"query failed: {reply.error}")
        configs[reply.metadata.src_node_id] = dict(reply.content["node-config"])

    start = np.arange(DIM, dtype=np.float64)
    train = [
        Message(
            RecordDict({"arrays": ArrayRecord({"vec": Array(start)})}),
            dst_node_id=n,
            message_type="train",
        )
        for n in nodes
    ]
    total, weight = np.zeros(DIM), 0.0
    for reply in grid.send_and_receive(train, timeout=60):
        if reply.has_error():
            raise RuntimeError(f"train failed: {reply.error}")
        w = float(reply.content["metrics"]["num-examples"])
        total += w * reply.content["arrays"]["vec"].numpy()
        weight += w
    pids = [int(c["partition-id"]) for c in configs.values()]
    expected = start + sum((p + 1) ** 2 for p in pids) / sum(p + 1 for p in pids)
    report = {
        "nodes": {str(n): c for n, c in configs.items()},
        "average": (total / weight).tolist(),
        "expected": expected.tolist(),
    }
    if out_file:
        with open(out_file, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, sort_keys=True)
