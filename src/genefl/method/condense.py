"""LearnGene condensation (SPEC §3.3–3.4): layer scores, the top-gamma choice, the
byte-budgeted choice and the gamma schedule.

A layer's score says how *little* it moved during local training; the learnGene is the
set of highest-scoring layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

#: Names of the supported score measures.
SCORE_MEASURES = ("paper", "cosine", "l1", "l2")


def layer_similarity(before: torch.Tensor, after: torch.Tensor, measure: str) -> float:
    """Similarity of one layer's flattened parameters before/after training.

    ``paper`` and ``cosine`` use the cosine similarity; ``l1`` and ``l2`` turn the mean
    absolute / root-mean-square change ``d`` into ``1 / (1 + d)``.
    """
    b = before.detach().flatten().double()
    a = after.detach().flatten().double()
    if measure in ("paper", "cosine"):
        return float(F.cosine_similarity(a, b, dim=0, eps=1e-12))
    diff = a - b
    if measure == "l1":
        d = float(diff.abs().mean())
    elif measure == "l2":
        d = float(diff.pow(2).mean().sqrt())
    else:
        raise ValueError(f"unknown layer score measure {measure!r}; choose from {SCORE_MEASURES}")
    return 1.0 / (1.0 + d)


def layer_scores(
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    layer_params: Mapping[str, Sequence[str]],
    measure: str = "paper",
) -> dict[str, float]:
    """Score every layer; higher means it moved less (Eq. 9).

    ``paper``: ``xi_l = cos(theta_l, theta_prev_l) / numel(l)``. Every measure is then
    normalised so the scores sum to 1 (when their sum is positive), which does not change
    the ranking.

    Args:
        before, after: tensors keyed by name, before and after local training.
        layer_params: layer name -> names of its parameter tensors (buffers excluded).
        measure: one of :data:`SCORE_MEASURES`.

    """
    if measure not in SCORE_MEASURES:
        raise ValueError(f"unknown layer score measure {measure!r}; choose from {SCORE_MEASURES}")
    raw: dict[str, float] = {}
    for layer, names in layer_params.items():
        if not names:
            continue
        b = torch.cat([before[n].detach().flatten() for n in names])
        a = torch.cat([after[n].detach().flatten() for n in names])
        s = layer_similarity(b, a, measure)
        raw[layer] = s / b.numel() if measure == "paper" else s
    total = sum(raw.values())
    if total > 0:
        return {k: v / total for k, v in raw.items()}
    return raw


def top_layers(scores: Mapping[str, float], gamma: int) -> list[str]:
    """The ``gamma`` highest-scoring layers, ties broken by layer order.

    Returned in the order of ``scores`` (model order), not by rank.
    """
    if gamma <= 0:
        return []
    order = list(scores)
    ranked = sorted(order, key=lambda k: (-scores[k], order.index(k)))
    chosen = set(ranked[:gamma])
    return [k for k in order if k in chosen]


def budgeted_layers(
    scores: Mapping[str, float], sizes: Mapping[str, int], budget_bytes: int
) -> list[str]:
    """Best-scoring layers whose total size fits ``budget_bytes`` (greedy by score).

    Walks layers from highest to lowest score and keeps each one that still fits; a layer
    larger than the remaining budget is skipped, not truncated.
    """
    order = list(scores)
    ranked = sorted(order, key=lambda k: (-scores[k], order.index(k)))
    chosen: set[str] = set()
    used = 0
    for k in ranked:
        if used + sizes[k] <= budget_bytes:
            chosen.add(k)
            used += sizes[k]
    return [k for k in order if k in chosen]


@dataclass
class GammaSchedule:
    """Performance-driven schedule for the learnGene size ``gamma`` (in layers).

    Starts at ``start`` layers. After each round, if the participants' validation accuracy
    (averaged over the last ``window`` rounds, to damp the noise of small validation
    sets) is within ``tolerance`` of the best such average seen so far, ``gamma`` drops
    by ``step`` (never below ``floor``). When accuracy falls further than ``tolerance``
    below the best, ``gamma`` returns to its value before the last drop; after ``patience`` such
    failures the schedule freezes: the learnGene has "stabilised at a threshold"
    (paper §III-A). ``patience`` absorbs the noise of a few clients' validation sets.
    """

    start: int
    floor: int
    step: int = 1
    tolerance: float = 0.02
    patience: int = 3
    window: int = 3
    gamma: int = field(init=False)
    history: list[float] = field(init=False, default_factory=list)
    best_accuracy: float = field(init=False, default=-math.inf)
    frozen: bool = field(init=False, default=False)
    failures: int = field(init=False, default=0)
    _previous: int = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.start:
            raise ValueError(f"gamma floor {self.floor} must be in [1, start={self.start}]")
        if self.step < 0:
            raise ValueError("gamma step must be >= 0")
        if self.patience < 1 or self.window < 1:
            raise ValueError("gamma patience and window must be >= 1")
        self.gamma = self.start
        self._previous = self.start

    def update(self, accuracy: float) -> int:
        """Feed one round's validation accuracy in ``[0, 1]``; return the next gamma."""
        if self.frozen or math.isnan(accuracy):
            return self.gamma
        self.history.append(float(accuracy))
        accuracy = sum(self.history[-self.window :]) / len(self.history[-self.window :])
        if accuracy >= self.best_accuracy - self.tolerance:
            self.best_accuracy = max(self.best_accuracy, accuracy)
            self._previous = self.gamma
            self.gamma = max(self.floor, self.gamma - self.step)
        else:
            self.gamma = self._previous
            self.failures += 1
            self.frozen = self.failures >= self.patience
        return self.gamma

    def state_dict(self) -> dict[str, object]:
        """Every figure of the schedule, for logs and checkpoints."""
        return {
            "gamma": self.gamma,
            "best_accuracy": self.best_accuracy,
            "frozen": self.frozen,
            "failures": self.failures,
            "previous": self._previous,
            "history": list(self.history),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.gamma = int(state["gamma"])
        self.best_accuracy = float(state["best_accuracy"])
        self.frozen = bool(state["frozen"])
        self.failures = int(state["failures"])
        self.history = [float(a) for a in state["history"]]
        self._previous = int(state["previous"])
