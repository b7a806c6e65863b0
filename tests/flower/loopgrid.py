"""A Flower ``Grid`` that delivers messages to ClientApps in this process (for tests).

Each node is a Flower ``Context`` (its node config and per-run state) in front of a
ClientApp; tests add nodes while a run is under way, make nodes go silent (as a node
that was killed: no reply until the round timeout) or disappear, and bring them back
as new nodes with the same client id. Messages go through the real ``Message`` objects,
the real ClientApp handlers and the real ServerApp code; only the network is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

#: the SuperLink's own node id in messages it sends
SERVER_NODE_ID = 1


class LoopGrid:
    """In-process stand-in for the SuperLink's grid."""

    def __init__(self, client_app: Any, run_config: Mapping[str, Any] | None = None) -> None:
        self.client_app = client_app
        self.run_config = dict(run_config or {})
        self.nodes: dict[int, Context] = {}
        #: nodes that are listed as connected but never answer (killed, not yet noticed)
        self.silent: set[int] = set()
        self.sent: list[Message] = []
        self.replies: list[Message] = []
        self._next = 1000
        TaskIdentity.run_id = 1  # what the ServerApp process gets from the SuperLink
        TaskIdentity.node_id = SERVER_NODE_ID
        TaskIdentity.task_id = 1

    def add_node(self, node_config: Mapping[str, Any]) -> int:
        """Connect a new node; returns its node id."""
        self._next += 1
        self.nodes[self._next] = Context(run_id=1, node_id=self._next,
                                         node_config=dict(node_config), state=RecordDict(),
                                         run_config=self.run_config)
        return self._next

    def remove_node(self, node_id: int) -> None:
        """The node is gone (no longer listed)."""
        self.nodes.pop(node_id, None)
        self.silent.discard(node_id)

    def node_of(self, client_id: int) -> int:
        """The node hosting ``client_id``."""
        return next(n for n, c in self.nodes.items()
                    if int(c.node_config["client-id"]) == client_id)

    # -- the Grid interface the ServerApp uses ---------------------------------------------
    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:  # noqa: D102
        out = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.sent.append(msg)
            node = msg.metadata.dst_node_id
            context = self.nodes.get(node)
            if context is None:
                out.append(Message(Error(code=1, reason="node unavailable"), reply_to=msg))
                continue
            if node in self.silent:
                continue
            try:
                reply = self.client_app(msg, context)
            except Exception as exc:  # the ClientApp failed: Flower sends an error reply
                reply = Message(Error(code=2, reason=repr(exc)), reply_to=msg)
            self.replies.append(reply)
            out.append(reply)
        return out
