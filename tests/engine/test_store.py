"""Client stores: in memory, and on disk with bounded memory (issue 5), both resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset

from genefl.callbacks.base import Callback
from genefl.config import resolve
from genefl.engine.simulation import run_simulation
from genefl.engine.store import ClientStore, DiskClientStore

QUICK = dict(
    known_clients=6, agnostic_clients=6, clusters=2, known_rounds=3, agnostic_rounds=3,
    clients_per_round=3, local_epochs=1, batch_size=16, shards=2, device="cpu",
)


def _record(seed: int) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    params = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen)}
    state = {"masks": {"w": torch.rand(3, 4, generator=gen) > 0.5}, "activity": [0.25, 1 / 3],
             "count": 7}
    return params, state


def test_disk_store_round_trips_exactly_and_keeps_few_records_in_memory(tmp_path: Path) -> None:
    store = DiskClientStore(tmp_path, cache_size=2)
    for cid in range(5):
        store.put(cid, *_record(cid))
    assert len(store) == 5 and 3 in store and 9 not in store and store.get(9) is None
    assert len(store._cache) == 2
    for cid in range(5):
        params, state = _record(cid)
        got = store.get(cid)
        assert got is not None
        assert all(torch.equal(got.params[k], v) for k, v in params.items())
        assert torch.equal(got.state["masks"]["w"], state["masks"]["w"])
        assert got.state["masks"]["w"].dtype == torch.bool
        assert got.state["activity"] == state["activity"] and got.state["count"] == 7
    assert len(store._cache) == 2
    assert len(list(tmp_path.glob("*.npz"))) == 5  # one current file per client
    # files are plain arrays: readable without pickle
    with np.load(next(tmp_path.glob("*.npz")), allow_pickle=False) as data:
        assert "p/w" in data.files


def test_disk_store_keeps_the_files_of_the_last_two_checkpoints(tmp_path: Path) -> None:
    store = DiskClientStore(tmp_path, cache_size=1)
    store.put(0, *_record(0))
    first = store.state_dict()
    store.put(0, *_record(1))
    second = store.state_dict()
    store.put(0, *_record(2))
    assert len(list(tmp_path.glob("0.*.npz"))) == 3  # current + two pinned versions
    restored = DiskClientStore(tmp_path)
    restored.load_state_dict(first)
    assert torch.equal(restored.get(0).params["w"], _record(0)[0]["w"])
    store.state_dict()  # a third checkpoint: the first one's file may go
    assert not (tmp_path / f"0.{first['versions'][0]}.npz").exists()
    assert (tmp_path / f"0.{second['versions'][0]}.npz").exists()


def test_unsupported_extras_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot be stored on disk"):
        DiskClientStore(tmp_path).put(0, {"w": torch.zeros(1)}, {"bad": object()})


def test_memory_store_round_trips_through_state_dict() -> None:
    store = ClientStore()
    store.put(4, *_record(4))
    copy = ClientStore()
    copy.load_state_dict(store.state_dict())
    assert torch.equal(copy.get(4).params["b"], _record(4)[0]["b"])


class Crash(Callback):
    """Raises at the end of round ``at`` (before that round's checkpoint)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_round_end(self, record) -> None:
        if record.round == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "store, method", [("memory", "genefl"), ("disk", "genefl"), ("disk", "fedlps"),
                      ("disk", "fedlg")],
)
def test_crash_and_resume_matches_an_uninterrupted_run(tmp_path: Path, store, method) -> None:
    config, params = resolve({}, {**QUICK, "method": method, "client_store": store})
    reference = run_simulation(config, params, dataset=make_dataset())
    for at in (1, 4):
        checkpoint = tmp_path / f"{at}" / "checkpoint.pt"
        checkpoint.parent.mkdir()
        with pytest.raises(KeyboardInterrupt):
            run_simulation(config, params, [Crash(at)], make_dataset(), checkpoint=checkpoint)
        resumed = run_simulation(config, params, (), make_dataset(), checkpoint=checkpoint,
                                 resume=True)
        for key, value in reference.items():
            if key not in ("wall_seconds", "peak_rss_mb"):
                assert resumed[key] == value, (at, key)
    if store == "disk":
        assert list((tmp_path / "1" / "clients").glob("*.npz"))
