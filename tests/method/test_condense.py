"""LearnGene condensation (SPEC §3.3–3.4): scores, top-gamma, budget, gamma schedule."""

from __future__ import annotations

import math

import pytest
import torch

from genefl.method.condense import (
    GammaSchedule,
    budgeted_layers,
    layer_scores,
    layer_similarity,
    top_layers,
)

# Three toy layers.
#   l1: w [1,0] -> [1,1]                  cos = 1/sqrt(2), numel 2, diff [0,1]
#   l2: w [1,0,0,0] -> [2,0,0,0]          cos = 1,         numel 4, diff [1,0,0,0]
#   l3: w [3,0] -> [3,4], b [4] -> [0]    concatenated [3,0,4] -> [3,4,0]:
#       dot 9, norms 5 and 5, cos = 0.36, numel 3, diff [0,4,-4]
BEFORE = {
    "l1.w": torch.tensor([1.0, 0.0]),
    "l2.w": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
    "l3.w": torch.tensor([3.0, 0.0]),
    "l3.b": torch.tensor([4.0]),
    "l3.running_mean": torch.tensor([0.0]),  # buffer: not part of any score
}
AFTER = {
    "l1.w": torch.tensor([1.0, 1.0]),
    "l2.w": torch.tensor([[2.0, 0.0], [0.0, 0.0]]),
    "l3.w": torch.tensor([3.0, 4.0]),
    "l3.b": torch.tensor([0.0]),
    "l3.running_mean": torch.tensor([100.0]),
}
LAYER_PARAMS = {"l1": ("l1.w",), "l2": ("l2.w",), "l3": ("l3.w", "l3.b")}


def _normalised(raw: dict[str, float]) -> dict[str, float]:
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def _assert_scores(got: dict[str, float], expected: dict[str, float]) -> None:
    assert list(got) == list(expected)
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-9), k
    assert sum(got.values()) == pytest.approx(1.0)


def test_paper_score_is_cos_over_numel_normalised() -> None:
    raw = {"l1": (1 / math.sqrt(2)) / 2, "l2": 1.0 / 4, "l3": 0.36 / 3}
    _assert_scores(layer_scores(BEFORE, AFTER, LAYER_PARAMS, "paper"), _normalised(raw))
    # default measure is "paper"
    _assert_scores(layer_scores(BEFORE, AFTER, LAYER_PARAMS), _normalised(raw))


def test_cosine_score() -> None:
    raw = {"l1": 1 / math.sqrt(2), "l2": 1.0, "l3": 0.36}
    _assert_scores(layer_scores(BEFORE, AFTER, LAYER_PARAMS, "cosine"), _normalised(raw))


def test_l1_score() -> None:
    """Mean |diff|: l1 0.5, l2 0.25, l3 8/3 -> 1/(1+d)."""
    raw = {"l1": 1 / 1.5, "l2": 1 / 1.25, "l3": 1 / (1 + 8 / 3)}
    _assert_scores(layer_scores(BEFORE, AFTER, LAYER_PARAMS, "l1"), _normalised(raw))


def test_l2_score() -> None:
    """RMS diff: l1 sqrt(1/2), l2 sqrt(1/4)=0.5, l3 sqrt(32/3) -> 1/(1+d)."""
    raw = {
        "l1": 1 / (1 + math.sqrt(0.5)),
        "l2": 1 / 1.5,
        "l3": 1 / (1 + math.sqrt(32 / 3)),
    }
    _assert_scores(layer_scores(BEFORE, AFTER, LAYER_PARAMS, "l2"), _normalised(raw))


def test_scores_unknown_measure_raises_and_empty_layers_skipped() -> None:
    with pytest.raises(ValueError):
        layer_scores(BEFORE, AFTER, LAYER_PARAMS, "dot")
    with pytest.raises(ValueError):
        layer_similarity(BEFORE["l1.w"], AFTER["l1.w"], "dot")
    got = layer_scores(BEFORE, AFTER, {"l1": ("l1.w",), "empty": ()}, "paper")
    assert list(got) == ["l1"] and got["l1"] == pytest.approx(1.0)


def test_scores_not_normalised_when_sum_not_positive() -> None:
    """A layer that flipped sign has cos -1; with numel 2 its raw paper score is -0.5."""
    before = {"w": torch.tensor([1.0, 2.0])}
    after = {"w": torch.tensor([-1.0, -2.0])}
    got = layer_scores(before, after, {"w": ("w",)}, "paper")
    assert got["w"] == pytest.approx(-0.5)


def test_top_layers_ranking_ties_and_order() -> None:
    scores = {"a": 0.1, "b": 0.4, "c": 0.2, "d": 0.4, "e": 0.0}
    assert top_layers(scores, 1) == ["b"]  # tie b/d broken by order
    assert top_layers(scores, 2) == ["b", "d"]
    assert top_layers(scores, 3) == ["b", "c", "d"]  # model order, not rank order
    assert top_layers(scores, 4) == ["a", "b", "c", "d"]
    assert top_layers(scores, 0) == []
    assert top_layers(scores, -1) == []
    assert top_layers(scores, 99) == ["a", "b", "c", "d", "e"]
    tie = {"x": 0.3, "y": 0.5, "z": 0.3}
    assert top_layers(tie, 2) == ["x", "y"]
    reordered = {"z": 0.3, "y": 0.5, "x": 0.3}
    assert top_layers(reordered, 2) == ["z", "y"]


def test_budgeted_layers_greedy_skips_top_layer_that_does_not_fit() -> None:
    """Ranking a (100 B) > b (40 B) > c (50 B).  Budget 90: a does not fit, b fits
    (40), c fits exactly (90 <= 90) -> [b, c].  Budget 89: c no longer fits -> [b]."""
    scores = {"a": 0.5, "b": 0.3, "c": 0.2}
    sizes = {"a": 100, "b": 40, "c": 50}
    assert budgeted_layers(scores, sizes, 90) == ["b", "c"]
    assert budgeted_layers(scores, sizes, 89) == ["b"]
    assert budgeted_layers(scores, sizes, 100) == ["a"]
    assert budgeted_layers(scores, sizes, 140) == ["a", "b"]
    assert budgeted_layers(scores, sizes, 190) == ["a", "b", "c"]
    assert budgeted_layers(scores, sizes, 39) == []
    # returned in model order, not rank order
    assert budgeted_layers({"c": 0.2, "b": 0.3}, {"c": 50, "b": 40}, 90) == ["c", "b"]


def _run(schedule: GammaSchedule, accs: list[float]) -> list[int]:
    return [schedule.update(a) for a in accs]


def test_gamma_schedule_drop_restore_freeze() -> None:
    """start 6, floor 2, step 1, tol 0.05, patience 2, window 1.
    .50 -> hold (best .50) 6->5;  .40 < .45 fail #1 -> back to 6;
    .55 hold (best .55) 6->5;  .56 hold (best .56) 5->4;
    .45 < .51 fail #2 -> back to 5, frozen;  .90, .99 -> stay 5."""
    s = GammaSchedule(start=6, floor=2, step=1, tolerance=0.05, patience=2, window=1)
    assert s.gamma == 6
    assert _run(s, [0.50, 0.40, 0.55, 0.56, 0.45, 0.90, 0.99]) == [5, 6, 5, 4, 5, 5, 5]
    assert s.frozen and s.failures == 2
    assert s.best_accuracy == pytest.approx(0.56)
    assert s.history == [0.50, 0.40, 0.55, 0.56, 0.45]  # nothing recorded once frozen


def test_gamma_schedule_within_tolerance_counts_as_holding() -> None:
    """.50 then .46 (>= .50 - .05): both hold, best stays .50; .44 fails."""
    s = GammaSchedule(start=5, floor=1, tolerance=0.05, patience=5, window=1)
    assert _run(s, [0.50, 0.46, 0.44]) == [4, 3, 4]
    assert s.best_accuracy == pytest.approx(0.50) and s.failures == 1


def test_gamma_schedule_floor_and_step() -> None:
    s = GammaSchedule(start=4, floor=2, step=1, tolerance=0.0, patience=1, window=1)
    assert _run(s, [0.1, 0.2, 0.3, 0.4]) == [3, 2, 2, 2]
    s = GammaSchedule(start=5, floor=2, step=2, tolerance=0.0, patience=1, window=1)
    assert _run(s, [0.1, 0.2, 0.3]) == [3, 2, 2]
    s = GammaSchedule(start=3, floor=1, step=0, tolerance=0.0, patience=1, window=1)
    assert _run(s, [0.1, 0.2]) == [3, 3]


def test_gamma_schedule_window_averaging() -> None:
    """window 2, tol 0, start 6, floor 1, patience 3:
    .50 -> avg .50 hold (best .50) 5;  .40 -> avg .45 fail -> 6;
    .70 -> avg .55 hold (best .55) 5;  .50 -> avg .60 hold (best .60) 4;
    .58 -> avg .54 fail -> 5.
    With window 1 the 4th value (.50 < .70) would already fail."""
    s = GammaSchedule(start=6, floor=1, tolerance=0.0, patience=3, window=2)
    assert _run(s, [0.50, 0.40, 0.70, 0.50, 0.58]) == [5, 6, 5, 4, 5]
    assert s.best_accuracy == pytest.approx(0.60)
    assert s.failures == 2 and not s.frozen
    w1 = GammaSchedule(start=6, floor=1, tolerance=0.0, patience=3, window=1)
    assert _run(w1, [0.50, 0.40, 0.70, 0.50]) == [5, 6, 5, 6]


def test_gamma_schedule_nan_is_ignored() -> None:
    s = GammaSchedule(start=4, floor=1, tolerance=0.0, window=1)
    assert s.update(float("nan")) == 4
    assert s.history == [] and s.failures == 0
    assert _run(s, [0.5, float("nan"), 0.5]) == [3, 3, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 3, "floor": 0},
        {"start": 3, "floor": 4},
        {"start": 3, "floor": 1, "step": -1},
        {"start": 3, "floor": 1, "patience": 0},
        {"start": 3, "floor": 1, "window": 0},
    ],
)
def test_gamma_schedule_rejects_bad_config(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        GammaSchedule(**kwargs)


def test_gamma_schedule_consecutive_failures_and_failure_at_floor() -> None:
    """Restoring goes back to the value before the *last drop*, not one step up per
    failure.  start 5, floor 1, tol 0, window 1: .5 -> 4; .4 fail -> 5; .3 fail -> 5
    (still 5, not 6); .6 -> 4.
    At the floor: start 3, floor 2: .5 -> 2; .6 -> 2 (drop clamped, the value before it
    is 2); .1 fail -> 2."""
    s = GammaSchedule(start=5, floor=1, tolerance=0.0, patience=5, window=1)
    assert _run(s, [0.5, 0.4, 0.3, 0.6]) == [4, 5, 5, 4]
    assert s.failures == 2
    s = GammaSchedule(start=3, floor=2, tolerance=0.0, patience=5, window=1)
    assert _run(s, [0.5, 0.6, 0.1]) == [2, 2, 2]


def test_gamma_schedule_state_round_trip_continues_identically() -> None:
    """window 2, tol .05, patience 3, start 6, floor 2.
    First four: .50 hold (best .50) 5; .30 avg .40 fail #1 -> 6; .70 avg .50 hold -> 5;
    .60 avg .65 hold (best .65) -> 4, the value before this drop being 5.
    Then .40 avg .50 fail #2 -> 5; .90 avg .65 hold -> 4; .20 avg .55 fail #3 -> 5, frozen."""
    accs = [0.50, 0.30, 0.70, 0.60, 0.40, 0.90, 0.20]
    cfg = dict(start=6, floor=2, step=1, tolerance=0.05, patience=3, window=2)
    a = GammaSchedule(**cfg)
    assert _run(a, accs[:4]) == [5, 6, 5, 4]
    state = a.state_dict()
    assert state["gamma"] == 4 and state["previous"] == 5
    assert state["history"] == [0.50, 0.30, 0.70, 0.60]
    assert state["failures"] == 1 and state["frozen"] is False
    assert state["best_accuracy"] == pytest.approx(0.65)
    b = GammaSchedule(**cfg)
    b.load_state_dict(state)
    state["history"].append(123.0)  # the loaded schedule must not alias the dict
    assert b.state_dict() == a.state_dict()
    rest_a = _run(a, accs[4:])
    rest_b = _run(b, accs[4:])
    assert rest_a == rest_b == [5, 4, 5]
    assert b.state_dict() == a.state_dict()
    assert b.frozen and b.failures == 3
    c = GammaSchedule(**cfg)  # did not load the state
    _run(c, accs[4:])
    assert c.state_dict() != a.state_dict()
