"""Per-client state kept between rounds: each client's own model and algorithm extras."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from genefl.types import ParamDict


@dataclass
class ClientRecord:
    """A client's own model (layer tensors) and its algorithm-specific extras."""

    params: ParamDict
    state: dict[str, Any] = field(default_factory=dict)


class ClientStore:
    """In-memory store of :class:`ClientRecord` by client id.

    Tensors are stored detached, on the device they were given on.
    """

    def __init__(self) -> None:
        self._records: dict[int, ClientRecord] = {}

    def get(self, client_id: int) -> ClientRecord | None:
        """The client's record, or ``None`` if it never trained or joined."""
        return self._records.get(client_id)

    def put(
        self, client_id: int, params: Mapping[str, torch.Tensor], state: dict[str, Any]
    ) -> None:
        """Save (replace) a client's model and extras."""
        self._records[client_id] = ClientRecord(
            {k: v.detach() for k, v in params.items()}, state
        )

    def state_dict(self) -> dict[int, dict[str, Any]]:
        """Every record as plain data (for checkpoints)."""
        return {
            cid: {"params": dict(r.params), "state": dict(r.state)}
            for cid, r in self._records.items()
        }

    def load_state_dict(
        self, state: Mapping[int, Mapping[str, Any]], device: torch.device | str = "cpu"
    ) -> None:
        """Replace the records with :meth:`state_dict`'s output."""
        self._records = {}
        for cid, record in state.items():
            params = {k: v.to(device) for k, v in record["params"].items()}
            extras = {
                k: ({n: t.to(device) for n, t in v.items()} if _is_tensor_dict(v) else v)
                for k, v in record["state"].items()
            }
            self._records[int(cid)] = ClientRecord(params, extras)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(
        isinstance(t, torch.Tensor) for t in value.values()
    )
