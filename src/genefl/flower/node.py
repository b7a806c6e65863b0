"""A SuperNode's side: its client's data, the run's model, and the client's kept state.

A node builds the same seeded federation as every other driver from the run config and
its own copy of the data set, and keeps only its own client's part
(:func:`load_client`); nothing but model layers and signatures crosses the wire.

The client's own model and the algorithm's per-client extras are kept between rounds by
a :class:`NodeStore`: one version per round the client trained, so that a round that is
run again (the ServerApp resumed from a checkpoint taken before it) starts from the
same state as the first time. With a ``state-dir`` in the node config the versions are
files and survive a restart of the node; without, they live in Flower's per-run
``Context.state`` and a restarted node (or a new ``flwr run``) starts its client afresh.
In a ``state-dir`` the files of one run live under ``run-<key>/``, the key a digest of
the run's resolved configuration (output directory included): a resumed run (same run
config) finds its versions, another run on the same node never reads them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genefl.algorithms.base import Algorithm
from genefl.config import RunConfig, resolved_dict
from genefl.data.datasets import load_dataset, subsample_train
from genefl.data.federation import Federation, build_federation
from genefl.engine.rounds import ClientTensors
from genefl.engine.simulation import client_tensors, make_algorithm, model_parts, resolve_device
from genefl.flower.runconfig import NodeSpec
from genefl.models.layers import Layer
from genefl.seeding import numpy_rng
from genefl.types import ParamDict

#: ``Context.state`` key of the versions kept in memory
STATE_KEY = "genefl.client"


@dataclass
class ClientSide:
    """Everything a node needs to work for its client."""

    spec: NodeSpec
    config: RunConfig
    data: ClientTensors
    model: torch.nn.Module
    layers: list[Layer]
    layer_map: dict[str, Layer]
    initial: ParamDict
    fresh: Any
    algorithm: Algorithm
    device: torch.device
    #: the run's key (:func:`run_key`): its versions' folder inside a ``state-dir``
    run_key: str = ""


#: per process: the last federation built, and the clients it hosts (a simulation
#: worker or a test hosts many nodes; a deployed node one)
_FEDERATION: dict[tuple, tuple[Any, Federation]] = {}
_SIDES: OrderedDict[tuple, ClientSide] = OrderedDict()
MAX_CACHED_CLIENTS = 256


def _federation(spec: NodeSpec, config: RunConfig) -> tuple[Any, Federation]:
    c = config
    key = (spec.dataset, spec.data_dir, c.image_size, c.seed, c.train_fraction, c.known_clients,
           c.agnostic_clients, c.partition, c.shards, c.beta, c.val_fraction)
    if key not in _FEDERATION:
        dataset = load_dataset(spec.dataset, spec.data_dir, c.image_size, c.cache_dir)
        dataset = subsample_train(dataset, c.train_fraction, numpy_rng(c.seed, "subsample"))
        federation = build_federation(
            dataset, c.known_clients, c.agnostic_clients, c.partition, c.shards, c.beta,
            c.val_fraction, numpy_rng(c.seed, "federation"),
        )
        _FEDERATION.clear()
        _FEDERATION[key] = (dataset, federation)
    return _FEDERATION[key]


def load_client(spec: NodeSpec, config: RunConfig, params: Any) -> ClientSide:
    """The node's client: its part of the seeded federation on its device, the run's
    model and algorithm (cached per process: a node answers many messages).
    """
    key = (spec, tuple(sorted((k, repr(v)) for k, v in vars(config).items())), repr(params))
    if key in _SIDES:
        _SIDES.move_to_end(key)
        return _SIDES[key]
    device = resolve_device(spec.device or config.device)
    dataset, federation = _federation(spec, config)
    split = next(s for s in federation.known + federation.agnostic
                 if s.client_id == spec.client_id)
    own = Federation(federation.known_classes, federation.agnostic_classes, [split], [])
    data = client_tensors(dataset, own, device)[spec.client_id]
    model, layers, initial, fresh = model_parts(
        config, dataset.image_shape, dataset.num_classes, device
    )
    algorithm = make_algorithm(config, params, layers)
    side = ClientSide(spec, config, data, model, layers, {la.name: la for la in layers},
                      initial, fresh, algorithm, device, run_key(config, params))
    _SIDES[key] = side
    while len(_SIDES) > MAX_CACHED_CLIENTS:
        _SIDES.popitem(last=False)
    return side


def run_key(config: RunConfig, params: Any) -> str:
    """A short digest of the run's resolved configuration (the same for every node and
    for a resumed run; different for another run).
    """
    text = json.dumps(resolved_dict(config, params), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dump(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _load(blob: bytes, device: torch.device) -> dict[str, Any]:
    return torch.load(io.BytesIO(blob), map_location=device, weights_only=True)


class NodeStore:
    """Versions of one client's ``(params, extras)`` by the round that produced them.

    ``state`` is Flower's ``Context.state`` (used when ``folder`` is ``None``); in a
    ``folder`` (a node's ``state-dir``) the versions are files under
    ``run-<run_key>/client-<id>/``.
    """

    def __init__(self, state: Any, folder: str | None, client_id: int,
                 device: torch.device, run_key: str = "") -> None:
        self.state = state
        self.folder = (Path(folder) / f"run-{run_key or 'default'}" / f"client-{client_id}"
                       if folder else None)
        self.device = device
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    # -- storage -----------------------------------------------------------------------
    def _rounds(self) -> list[int]:
        if self.folder is not None:
            return sorted(int(m.group(1)) for p in self.folder.iterdir()
                          if (m := re.fullmatch(r"round-(\d+)\.pt", p.name)))
        if STATE_KEY not in self.state:
            return []
        return sorted(int(k[1:]) for k in self.state[STATE_KEY])

    def _read(self, rnd: int) -> bytes:
        if self.folder is not None:
            return (self.folder / f"round-{rnd}.pt").read_bytes()
        return self.state[STATE_KEY][f"r{rnd}"]

    def _write(self, rnd: int, blob: bytes) -> None:
        if self.folder is not None:
            tmp = self.folder / f"round-{rnd}.pt.tmp"
            tmp.write_bytes(blob)
            tmp.replace(self.folder / f"round-{rnd}.pt")
            return
        from flwr.app import ConfigRecord

        record = self.state[STATE_KEY] if STATE_KEY in self.state else ConfigRecord()
        record[f"r{rnd}"] = blob
        self.state[STATE_KEY] = record

    def _delete(self, rnd: int) -> None:
        if self.folder is not None:
            (self.folder / f"round-{rnd}.pt").unlink(missing_ok=True)
        else:
            del self.state[STATE_KEY][f"r{rnd}"]

    # -- versions ----------------------------------------------------------------------
    def newest(self) -> int:
        """The newest round kept (-1: none)."""
        rounds = self._rounds()
        return rounds[-1] if rounds else -1

    def latest(self, before: int) -> tuple[ParamDict, dict[str, Any]] | None:
        """The newest ``(params, extras)`` from a round before ``before``."""
        rounds = [r for r in self._rounds() if r < before]
        if not rounds:
            return None
        saved = _load(self._read(rounds[-1]), self.device)
        return saved["params"], saved["state"]

    def save(self, rnd: int, params: Mapping[str, torch.Tensor], extras: dict[str, Any],
             keep_from: int) -> None:
        """Keep round ``rnd``'s version; drop versions of later rounds (left by a run
        that was resumed from an earlier checkpoint) and those older than the newest
        one before ``keep_from`` (the round a resumed server would start from).
        """
        blob = _dump({"params": {k: v.detach().cpu() for k, v in params.items()},
                      "state": _cpu(extras)})
        for r in self._rounds():
            if r > rnd:
                self._delete(r)
        self._write(rnd, blob)
        rounds = self._rounds()
        older = [r for r in rounds if r < keep_from]
        for r in older[:-1]:
            self._delete(r)


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value
