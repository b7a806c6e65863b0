"""Atomic, pickle-free checkpoints of a run (issue 4).

A checkpoint holds everything a run needs to continue as if it had never stopped: the
resolved config (to refuse a different one), the engine's state (cluster models, signature
centres, assignments, the client store, the algorithm's server state, the round counter),
each phase's counters and metrics so far, and figures computed between the phases. No
random-generator state is needed: every draw comes from a named stream of the run seed and
the round (:mod:`genefl.seeding`). The file is written with ``torch.save`` to a temporary
file, fsynced, and renamed over the old one, so a kill at any moment leaves the previous
complete checkpoint; it is read with ``torch.load(weights_only=True)``, which accepts only
tensors and plain containers (no arbitrary pickle code).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from genefl.errors import ConfigError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


@contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise it.

    A ``KeyboardInterrupt`` raised inside ``torch.save``'s writer comes out as a
    ``RuntimeError`` from its C++ zip writer: the user would see a traceback instead of a
    clean stop. Only the main thread can set signal handlers; elsewhere, or when Ctrl-C is
    ignored, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread() or not callable(
        signal.getsignal(signal.SIGINT)
    ):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous is signal.default_int_handler:
        raise KeyboardInterrupt
    if caught and callable(previous):
        previous(signal.SIGINT, None)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (temp file, fsync, rename). Ctrl-C during
    the write takes effect once the new checkpoint is in place.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with _ctrl_c_after():
        with tmp.open("wb") as fh:
            torch.save({"version": FORMAT_VERSION, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover  (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (a clear error otherwise)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(
            f"--resume: {path} does not exist; the run wrote no checkpoint yet (start it "
            "again without --resume)"
        ) from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(f"--resume: {path} is not a readable genefl checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"--resume: {path} is not a genefl checkpoint of format {FORMAT_VERSION}"
        )
    return payload
