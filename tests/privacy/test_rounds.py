"""Leakage by round: victims are attacked at the model state and with the share of the
round asked for, out of one training run per method."""

from __future__ import annotations

from pathlib import Path

import torch

from genefl.cli import _merged_values, build_parser
from genefl.compare import plan_runs
from genefl.data.datasets import load_dataset
from genefl.engine.rounds import Engine
from genefl.privacy.options import AttackOptions

TINY = [
    "--known-rounds", "3", "--known-clients", "6", "--agnostic-clients", "6",
    "--clusters", "2", "--clients-per-round", "3", "--local-epochs", "1", "--device", "cpu",
]


def test_each_round_is_attacked_at_that_rounds_weights_and_share(monkeypatch) -> None:
    import genefl.privacy.experiment as experiment

    values = _merged_values(build_parser().parse_args(["run", *TINY]))
    values.pop("method", None)
    config, params = plan_runs(values, ["genefl"], 1, Path("unused"), "test")[0]
    # what each client really had after its local training, and what it uploaded, by round
    trained: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    uploaded: dict[tuple[int, int], tuple[str, ...]] = {}
    real_outcome = Engine._outcome

    def outcome_spy(self, ctx, plan, result, down_bytes):
        if result.after is not None:
            key = (plan.round + 1, ctx.client_id)  # 1-based known round
            trained[key] = {k: v.detach().clone() for k, v in result.after.items()}
            uploaded[key] = result.upload.layers if result.upload is not None else ()
        return real_outcome(self, ctx, plan, result, down_bytes)

    seen: list[tuple[dict, list[str]]] = []
    real_observed = experiment.observed_gradients

    def observed_spy(model, victim, names, *rest, **kw):
        seen.append(({k: v.clone() for k, v in victim.items()}, list(names)))
        return real_observed(model, victim, names, *rest, **kw)

    monkeypatch.setattr(Engine, "_outcome", outcome_spy)
    monkeypatch.setattr(experiment, "observed_gradients", observed_spy)
    options = AttackOptions(
        methods="genefl", attack="ig", images=2, ig_iterations=1, ig_restarts=1,
    )
    trainings = []
    real_prepare = experiment.prepare_simulation

    def prepare_spy(*args, **kw):
        trainings.append(1)
        return real_prepare(*args, **kw)

    monkeypatch.setattr(experiment, "prepare_simulation", prepare_spy)
    attacks = experiment.run_attack(
        {"genefl": (config, params)}, ["genefl"], load_dataset("digits"), options, [1, 3],
        log=lambda _: None,
    )
    assert len(trainings) == 1  # one training run serves both rounds
    assert [(a.round, a.attack) for a in attacks] == [(1, "ig"), (3, "ig")]
    results = [r for a in attacks for r in a.results]
    assert len(results) == len(seen) == 4
    changed = 0
    for r, (weights, names) in zip(results, seen):
        truth = trained[(r.round, r.client_id)]
        assert weights.keys() == truth.keys()
        for k in truth:
            assert torch.equal(weights[k], truth[k]), (r.round, r.client_id, k)
        # the gradient covers exactly the parameters of the layers uploaded that round
        owners = {n.rsplit(".", 1)[0] for n in names}
        assert owners == set(uploaded[(r.round, r.client_id)])
        later = [rnd for rnd in (2, 3) if rnd > r.round and (rnd, r.client_id) in trained]
        for rnd in later:  # the client trained again later: its round-1 state is not that
            changed += any(
                not torch.equal(truth[k], trained[(rnd, r.client_id)][k]) for k in truth
            )
    assert changed > 0  # the test can tell the rounds' states apart
