"""Ctrl-C while a checkpoint is being written stops the run cleanly, after the write."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from genefl.engine import checkpoint
from genefl.engine.checkpoint import load_checkpoint, save_checkpoint


def test_ctrl_c_during_the_write_is_raised_once_the_checkpoint_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save

    def save_interrupted(obj, fh) -> None:  # Ctrl-C arrives in the middle of the write
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, fh)

    monkeypatch.setattr(checkpoint.torch, "save", save_interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    path = tmp_path / "checkpoint.pt"
    try:
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(path, {"round": 3, "w": torch.arange(4.0)})
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    saved = load_checkpoint(path)
    assert saved["round"] == 3 and torch.equal(saved["w"], torch.arange(4.0))
    assert not (tmp_path / "checkpoint.pt.tmp").exists()
