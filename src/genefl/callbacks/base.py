"""Callbacks: every side effect of a run (files, progress bars) goes through these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClientRoundRecord:
    """One client's participation in one round."""

    round: int
    phase: str
    client_id: int
    cluster: int
    joined: bool
    num_train: int
    test_accuracy: float
    val_accuracy: float
    train_loss: float
    diverged: bool
    upload_layers: tuple[str, ...]
    upload_bytes: int
    download_bytes: int
    init_bytes: int
    metrics: dict[str, float] = field(default_factory=dict)
    #: the client failed mid-round (``--dropout-rate``): downloaded, sent nothing
    dropped: bool = False
    #: why the server rejected its upload ("" if accepted or nothing was sent)
    rejected: str = ""


@dataclass
class RoundRecord:
    """Summary of one round (one CSV row)."""

    round: int
    phase: str
    phase_round: int
    participants: int
    accuracy: float
    val_accuracy: float
    train_loss: float
    upload_bytes: int
    download_bytes: int
    init_bytes: int
    cum_upload_bytes: int
    gamma: int | None
    chosen_layers: str
    diverged: int
    seconds: float
    dropped: int = 0
    rejected: int = 0
    #: every client of the phase scored after this round (NaN: not scored this round):
    #: personalised and server view, and how many clients were scored
    eval_accuracy: float = float("nan")
    eval_accuracy_server: float = float("nan")
    eval_clients: int = 0


class Callback:
    """Hooks called by the engine; every method is optional."""

    def on_run_start(self, info: dict[str, Any]) -> None:
        """Before the first round; ``info`` has the run's sizes and resolved config."""

    def on_phase_start(self, phase: str, rounds: int) -> None:
        """At the start of the known or the agnostic phase."""

    def on_client_end(self, record: ClientRoundRecord) -> None:
        """After each client's local training and upload."""

    def on_round_end(self, record: RoundRecord) -> None:
        """After aggregation."""

    def on_run_end(self, results: dict[str, Any]) -> None:
        """After the last round, with the final results."""


class CallbackList(Callback):
    """Fan out every hook to several callbacks, in order."""

    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])

    def on_run_start(self, info: dict[str, Any]) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_run_start(info)

    def on_phase_start(self, phase: str, rounds: int) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_phase_start(phase, rounds)

    def on_client_end(self, record: ClientRoundRecord) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_client_end(record)

    def on_round_end(self, record: RoundRecord) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_round_end(record)

    def on_run_end(self, results: dict[str, Any]) -> None:  # noqa: D102
        for cb in self.callbacks:
            cb.on_run_end(results)
