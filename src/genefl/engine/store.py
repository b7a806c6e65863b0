"""Per-client state kept between rounds: each client's own model and algorithm extras."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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


class DiskClientStore(ClientStore):
    """Client records on disk, at most ``cache_size`` of them in memory (LRU).

    Each record is one ``.npz`` file of plain arrays (read with ``allow_pickle=False``, so
    no pickle): parameters under ``p/<name>``, tensor-dict extras under ``t/<key>/<name>``,
    number-list extras under ``l/<key>``, number extras under ``n/<key>``. Memory does not
    grow with the number of clients, only with the cache (a round's participants).

    Every write goes to a new versioned file ``<client>.<version>.npz``, so the files named
    by the last two checkpoints (:meth:`state_dict`) stay on disk until they are superseded;
    a resumed run (:meth:`load_state_dict`) reads exactly the versions its checkpoint
    names.
    """

    def __init__(self, folder: Path | str, device: torch.device | str = "cpu",
                 cache_size: int = 32) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[int, ClientRecord] = OrderedDict()
        self._current: dict[int, int] = {}
        self._pins: list[dict[int, int]] = []
        self._version = 0

    # -- files -------------------------------------------------------------------------
    def _path(self, client_id: int, version: int) -> Path:
        return self.folder / f"{client_id}.{version}.npz"

    def _write(self, client_id: int, record: ClientRecord) -> int:
        arrays: dict[str, np.ndarray] = {}
        for name, tensor in record.params.items():
            arrays[f"p/{name}"] = tensor.detach().cpu().numpy()
        for key, value in record.state.items():
            if _is_tensor_dict(value):
                for name, tensor in value.items():
                    arrays[f"t/{key}/{name}"] = tensor.detach().cpu().numpy()
            elif isinstance(value, (list, tuple)):
                arrays[f"l/{key}"] = np.asarray(value, dtype=np.float64)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                arrays[f"n/{key}"] = np.asarray(value, dtype=np.float64)
            else:
                raise TypeError(
                    f"client {client_id}: extra {key!r} of type {type(value).__name__} cannot "
                    "be stored on disk (tensor dicts, number lists and numbers only)"
                )
        self._version += 1
        path = self._path(client_id, self._version)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
        return self._version

    def _read(self, client_id: int, version: int) -> ClientRecord:
        params: ParamDict = {}
        state: dict[str, Any] = {}
        with np.load(self._path(client_id, version), allow_pickle=False) as data:
            for key in data.files:
                kind, _, rest = key.partition("/")
                value = torch.from_numpy(data[key].copy())
                if kind == "p":
                    params[rest] = value.to(self.device)
                elif kind == "t":
                    group, _, name = rest.partition("/")
                    state.setdefault(group, {})[name] = value.to(self.device)
                elif kind == "l":
                    state[rest] = [float(v) for v in data[key]]
                elif kind == "n":
                    state[rest] = float(data[key])
        return ClientRecord(params, state)

    def _drop_file(self, client_id: int, version: int) -> None:
        if version == self._current.get(client_id):
            return
        if any(pin.get(client_id) == version for pin in self._pins):
            return
        self._path(client_id, version).unlink(missing_ok=True)

    def _remember(self, client_id: int, record: ClientRecord) -> None:
        self._cache[client_id] = record
        self._cache.move_to_end(client_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- the store interface -----------------------------------------------------------
    def get(self, client_id: int) -> ClientRecord | None:
        """The client's record (from the cache or its file), or ``None``."""
        if client_id in self._cache:
            self._cache.move_to_end(client_id)
            return self._cache[client_id]
        version = self._current.get(client_id)
        if version is None:
            return None
        record = self._read(client_id, version)
        self._remember(client_id, record)
        return record

    def put(
        self, client_id: int, params: Mapping[str, torch.Tensor], state: dict[str, Any]
    ) -> None:
        """Write the client's record to a new file and cache it."""
        record = ClientRecord({k: v.detach() for k, v in params.items()}, state)
        old = self._current.get(client_id)
        self._current[client_id] = self._write(client_id, record)
        if old is not None:
            self._drop_file(client_id, old)
        self._remember(client_id, record)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._current

    def __len__(self) -> int:
        return len(self._current)

    def __iter__(self) -> Iterator[int]:
        return iter(self._current)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The versions of every client's file (kept until two checkpoints later)."""
        manifest = dict(self._current)
        self._pins.append(manifest)
        if len(self._pins) > 2:
            stale = self._pins.pop(0)
            for cid, version in stale.items():
                self._drop_file(cid, version)
        return {"disk": str(self.folder), "versions": manifest}

    def load_state_dict(  # type: ignore[override]
        self, state: Mapping[Any, Any], device: torch.device | str = "cpu"
    ) -> None:
        """Point at the file versions a checkpoint names (records from an in-memory
        store's checkpoint are written out).
        """
        self._cache.clear()
        self.device = torch.device(device)
        if "versions" not in state:  # a checkpoint of the in-memory store
            memory = ClientStore()
            memory.load_state_dict(state, device)
            self._current = {}
            for cid in memory:
                record = memory.get(cid)
                assert record is not None
                self.put(cid, record.params, record.state)
            return
        self._current = {int(k): int(v) for k, v in state["versions"].items()}
        self._version = max([self._version, *self._current.values()])
        self._pins = [dict(self._current)]
