"""GENE-FL's hooks (SPEC §3–§5) on a tiny model, plus the FedAvg / Local defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_conv_bn_linear
from torch import nn

from genefl.algorithms.base import (
    Algorithm,
    ClientContext,
    ClientData,
    NoParams,
    RoundReport,
    Upload,
)
from genefl.algorithms.fedavg import FedAvg
from genefl.algorithms.genefl import GeneFL, GeneFLParams
from genefl.algorithms.local import Local
from genefl.engine.wire import layers_bytes, select_layers
from genefl.models.layers import list_layers

# Layers of the tiny model: "0" conv (20 params), "1" batch norm (4 params + 4 float
# buffer elements = 8 elements, 32 bytes), "4" linear (57 params).  Model: 85 elements,
# 340 bytes.
LAYER_PARAMS = {
    "0": ("0.weight", "0.bias"),
    "1": ("1.weight", "1.bias"),
    "4": ("4.weight", "4.bias"),
}


def _tiny_model() -> nn.Sequential:
    return tiny_conv_bn_linear([1.2, 0.8], [0.1, -0.2], [0.3, -0.1], [1.7, 0.6])


def _ctx(gamma: int = 2, **instructions: object) -> ClientContext:
    return ClientContext(
        client_id=3,
        cluster=0,
        round=1,
        phase="known",
        instructions={"gamma": gamma, **instructions},
        num_samples=6,
        state={},
        generator=torch.Generator().manual_seed(0),
        rng=np.random.default_rng(0),
    )


def _genefl(model: nn.Module, **params: object) -> GeneFL:
    return GeneFL(GeneFLParams(**params), list_layers(model), num_clusters=2)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _before_after(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """conv: tiny perturbation (cos ~ 1, paper score ~ 1/20);
    batch norm: [1.2, .8, .1, -.2] -> [1.2, .2, .6, -.2] (cos ~ 0.69, score ~ 0.17);
    linear: unchanged (cos 1, score 1/57).  Running stats move a lot but do not count.
    Paper ranking: bn > conv > linear.  Plain cosine ranking: linear > conv > bn."""
    before = _state(model)
    after = {k: v.clone() for k, v in before.items()}
    g = torch.Generator().manual_seed(5)
    after["0.weight"] += 0.01 * torch.randn(
        after["0.weight"].shape, generator=g, dtype=torch.float64
    )
    after["1.weight"] = torch.tensor([1.2, 0.2], dtype=torch.float64)
    after["1.bias"] = torch.tensor([0.6, -0.2], dtype=torch.float64)
    after["1.running_mean"] = torch.tensor([50.0, -50.0], dtype=torch.float64)
    after["1.running_var"] = torch.tensor([1e-3, 1e3], dtype=torch.float64)
    return before, after


def _hand_scores(before, after, measure: str) -> dict[str, float]:
    raw = {}
    for layer, names in LAYER_PARAMS.items():
        b = [float(x) for n in names for x in before[n].flatten()]
        a = [float(x) for n in names for x in after[n].flatten()]
        dot = sum(x * y for x, y in zip(a, b))
        cos = dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
        raw[layer] = cos / len(b) if measure == "paper" else cos
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def _hand_top(scores: dict[str, float], gamma: int) -> list[str]:
    order = list(scores)
    chosen = []
    remaining = dict(scores)
    for _ in range(min(gamma, len(order))):
        best = None
        for k in order:  # first in order wins ties
            if k in remaining and (best is None or remaining[k] > remaining[best]):
                best = k
        chosen.append(best)
        del remaining[best]
    return [k for k in order if k in chosen]


# -- client: condensation -------------------------------------------------------------
def test_select_upload_paper_score_top_gamma() -> None:
    model = _tiny_model()
    alg = _genefl(model)
    before, after = _before_after(model)
    scores = _hand_scores(before, after, "paper")
    assert scores["1"] > scores["0"] > scores["4"]  # the toy is what the docstring says
    assert _hand_top(scores, 2) == ["0", "1"]
    assert alg.select_upload(before, after, _ctx(gamma=2)) == ["0", "1"]
    assert alg.select_upload(before, after, _ctx(gamma=1)) == ["1"]
    assert alg.select_upload(before, after, _ctx(gamma=3)) == ["0", "1", "4"]
    assert alg.select_upload(before, after, _ctx(gamma=0)) == []


def test_select_upload_cosine_score_ranks_differently() -> None:
    model = _tiny_model()
    alg = _genefl(model, layer_score="cosine")
    before, after = _before_after(model)
    scores = _hand_scores(before, after, "cosine")
    assert scores["4"] > scores["0"] > scores["1"]
    assert alg.select_upload(before, after, _ctx(gamma=2)) == _hand_top(scores, 2) == ["0", "4"]


def test_select_upload_budget_mode_respects_byte_budget() -> None:
    """Sizes: conv 80 B, bn 32 B, linear 228 B; model 340 B.
    paper, budget 0.5 -> 170 B: bn (32) + conv (80) = 112 fit, linear does not -> [0, 1].
    cosine, budget 0.3 -> 102 B: linear (228) skipped, conv (80) fits, bn would make
    112 > 102 -> [0].  gamma from the instructions is ignored in budget mode."""
    model = _tiny_model()
    layers = {layer.name: layer for layer in list_layers(model)}
    before, after = _before_after(model)

    alg = _genefl(model, condense="budget", upload_budget=0.5)
    assert alg.model_bytes == 340
    chosen = alg.select_upload(before, after, _ctx(gamma=1))
    assert chosen == ["0", "1"]
    assert layers_bytes(layers, chosen) <= 170

    alg = _genefl(model, condense="budget", upload_budget=0.3, layer_score="cosine")
    chosen = alg.select_upload(before, after, _ctx(gamma=3))
    assert chosen == ["0"]
    assert layers_bytes(layers, chosen) <= int(0.3 * 340)

    alg = _genefl(model, condense="budget", upload_budget=0.05)  # 17 B: nothing fits
    assert alg.select_upload(before, after, _ctx()) == []


# -- server: gamma schedule and learnGene ---------------------------------------------
def _report(chosen: dict[int, list[tuple[str, ...]]], phase: str = "known", acc: float = 0.5):
    return RoundReport(round=0, phase=phase, uploads=[], val_accuracy=acc, chosen=chosen)


def test_schedule_starts_at_all_layers_and_moves_in_known_phase_only() -> None:
    model = _tiny_model()
    alg = _genefl(model)  # start ceil(1.0 * 3) = 3, floor ceil(0.25 * 3) = 1
    assert alg.instructions(0, "known") == {"gamma": 3}
    alg.end_round(_report({}, phase="known", acc=0.5))
    assert alg.instructions(1, "known") == {"gamma": 2}
    alg.end_round(_report({}, phase="agnostic", acc=0.9))
    alg.end_round(_report({}, phase="agnostic", acc=0.9))
    assert alg.instructions(2, "agnostic") == {"gamma": 2}
    alg.end_round(_report({}, phase="known", acc=0.6))
    alg.end_round(_report({}, phase="known", acc=0.7))
    assert alg.instructions(3, "known") == {"gamma": 1}  # floor


def test_learngene_layers_majority_of_last_participants() -> None:
    """Choices (conv, bn), (conv,), (bn, linear): counts conv 2, bn 2, linear 1 of 3
    participants; 'at least half' means 2 * count >= 3 -> conv and bn."""
    model = _tiny_model()
    alg = _genefl(model)
    assert alg.cluster_learngene(0) == []  # no participants yet
    alg.end_round(_report({0: [("0", "1"), ("0",), ("1", "4")]}))
    assert alg.cluster_learngene(0) == ["0", "1"]
    assert alg.cluster_learngene(1) == []
    # an empty choice list for the cluster keeps the previous round's choices
    alg.end_round(_report({0: []}))
    assert alg.cluster_learngene(0) == ["0", "1"]
    # exactly half counts; the result is in model order
    alg.end_round(_report({0: [("4",), ("4", "0"), ("0",), ("1",)], 1: [("1",)]}))
    assert alg.cluster_learngene(0) == ["0", "4"]
    assert alg.cluster_learngene(1) == ["1"]
    summary = alg.summary()
    assert summary["cluster_learngene_layers"] == {"0": ["0", "4"], "1": ["1"]}
    # what a new client downloads: the cluster learnGene without the classifier head "4"
    assert alg.learngene_layers(0) == ["0"]
    assert alg.learngene_layers(1) == ["1"]
    assert summary["classifier_head"] == "4"
    inherit = GeneFL(GeneFLParams(inherit_head=True), list_layers(model), num_clusters=2)
    inherit.end_round(_report({0: [("0", "4")]}))
    assert inherit.learngene_layers(0) == ["0", "4"]


def test_agnostic_downloads_never_carry_the_known_head_until_agnostic_heads_arrive() -> None:
    """Known phase: the whole cluster model. Agnostic phase: no head "4" until the
    cluster's agnostic clients upload one; another cluster is unaffected; the flag
    survives a checkpoint; ``inherit_head`` sends it always."""
    model = _tiny_model()
    alg = _genefl(model)
    alg.end_round(_report({0: [("0", "4")], 1: [("4",)]}))  # known clients chose the head
    assert alg.download_layers(0, "known") == ["0", "1", "4"]
    assert alg.download_layers(0, "agnostic") == ["0", "1"]
    alg.end_round(_report({0: [("0", "1")]}, phase="agnostic"))  # no head uploaded
    assert alg.download_layers(0, "agnostic") == ["0", "1"]
    alg.end_round(_report({0: [("1", "4")]}, phase="agnostic"))
    assert alg.download_layers(0, "agnostic") == ["0", "1", "4"]  # the agnostic head
    assert alg.download_layers(1, "agnostic") == ["0", "1"]
    restored = _genefl(model)
    restored.load_state_dict(alg.state_dict())
    assert restored.download_layers(0, "agnostic") == ["0", "1", "4"]
    assert restored.download_layers(1, "agnostic") == ["0", "1"]
    inherit = _genefl(model, inherit_head=True)
    assert inherit.download_layers(1, "agnostic") == ["0", "1", "4"]


def test_regulariser_defaults_are_the_plain_norms_of_eq_4_and_6() -> None:
    params = GeneFLParams()
    assert (params.gen_loss, params.elg_loss, params.fisher_norm) == (
        "layer-norm", "norm", "model"
    )
    assert (params.lambda1, params.lambda2, params.epsilon) == (0.5, 0.05, 0.5)


# -- client: start model -------------------------------------------------------------
def test_start_params_own_or_received_over_initial() -> None:
    model = _tiny_model()
    alg = _genefl(model)
    received = {"a": torch.tensor([1.0])}
    own = {"a": torch.tensor([2.0]), "b": torch.tensor([3.0])}
    initial = {"a": torch.tensor([4.0]), "b": torch.tensor([5.0])}
    got = alg.start_params(received, own, initial, _ctx())
    assert set(got) == {"a", "b"}
    assert float(got["a"]) == 2.0 and float(got["b"]) == 3.0  # own model, not received
    got = alg.start_params(received, None, initial, _ctx())
    assert float(got["a"]) == 1.0 and float(got["b"]) == 5.0  # received over initial
    # the FedAvg default overlays received on own
    fed = FedAvg(NoParams(), list_layers(model), 2)
    got = fed.start_params(received, own, initial, _ctx())
    assert float(got["a"]) == 1.0 and float(got["b"]) == 3.0


# -- client: local objective ---------------------------------------------------------
def _data(n: int = 6) -> ClientData:
    g = torch.Generator().manual_seed(2)
    return ClientData(
        torch.randn(n, 1, 5, 5, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (n,), generator=g),
    )


def _loop_fisher(model: nn.Module, data: ClientData) -> dict[str, torch.Tensor]:
    was = model.training
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    total = {n: torch.zeros_like(p) for n, p in zip(names, params)}
    for i in range(data.x.shape[0]):
        loss = F.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1])
        for n, g in zip(names, torch.autograd.grad(loss, params)):
            total[n] += g.detach() ** 2
    model.train(was)
    return {n: t / data.x.shape[0] for n, t in total.items()}


def _perturbed(model: nn.Module, layer_names: list[str]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    state = {
        k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype)
        if v.is_floating_point()
        else v
        for k, v in _state(model).items()
    }
    layers = {layer.name: layer for layer in list_layers(model)}
    return select_layers(state, layers, layer_names)


def _reference_terms(
    params: dict[str, torch.Tensor], received: dict[str, torch.Tensor],
    mask: dict[str, torch.Tensor], layers: list[str], gen: str, elg: str,
) -> tuple[float, float, dict[str, torch.Tensor]]:
    """Slow reference of L_gen, L_elg and the gradient of lambda1 L_gen + lambda2 L_elg
    per tensor (with lambda1 = lambda2 = 1), written from the formulas in SPEC §3:

    layer-norm: sum_l ||d_l||,        grad d / ||d_l||
    squared:    sum_l ||d_l||^2 / n_l, grad 2 d / n_l
    model-norm: ||d||,                grad d / ||d||
    elg norm:   ||M d||,              grad M d / ||M d||   (M d over every tensor at once)
    elg squared: ||M d||^2,           grad 2 M d
    """
    diff = {n: params[n] - received[n] for n in received if n in params}
    sq = {layer: sum(float((diff[n] ** 2).sum()) for n in LAYER_PARAMS[layer])
          for layer in layers}
    numel = {layer: sum(params[n].numel() for n in LAYER_PARAMS[layer]) for layer in layers}
    total_sq = sum(sq.values())
    masked_sq = sum(float(((mask[n] * diff[n]) ** 2).sum()) for n in diff)
    if gen == "layer-norm":
        smooth = sum(math.sqrt(v) for v in sq.values())
    elif gen == "squared":
        smooth = sum(sq[layer] / numel[layer] for layer in layers)
    else:
        smooth = math.sqrt(total_sq)
    elastic = math.sqrt(masked_sq) if elg == "norm" else masked_sq
    grads = {}
    for layer in layers:
        for n in LAYER_PARAMS[layer]:
            if gen == "layer-norm":
                g_gen = diff[n] / math.sqrt(sq[layer])
            elif gen == "squared":
                g_gen = 2 * diff[n] / numel[layer]
            else:
                g_gen = diff[n] / math.sqrt(total_sq)
            md = mask[n] * diff[n]
            g_elg = md / math.sqrt(masked_sq) if elg == "norm" else 2 * md
            grads[n] = (g_gen, g_elg)
    return smooth, elastic, grads


@pytest.mark.parametrize(
    ("received_layers", "gen", "elg", "fisher_norm"),
    [
        (["0", "1", "4"], "layer-norm", "norm", "model"),  # the defaults
        (["1", "4"], "layer-norm", "norm", "model"),
        (["0", "1", "4"], "squared", "squared", "model"),  # the first reading
        (["0", "1", "4"], "model-norm", "norm", "layer"),
        (["1", "4"], "squared", "norm", "layer"),
    ],
)
def test_local_objective_penalty_equals_reference(
    received_layers: list[str], gen: str, elg: str, fisher_norm: str
) -> None:
    lambda1, lambda2, eps = 0.3, 2.0, 0.1
    model = _tiny_model()
    model.train()
    alg = _genefl(model, lambda1=lambda1, lambda2=lambda2, epsilon=eps, fisher_chunk=4,
                  gen_loss=gen, elg_loss=elg, fisher_norm=fisher_norm)
    data = _data()
    received = _perturbed(model, received_layers)

    # reference: loop Fisher, min-max over the model (Eq. 6) or per layer, strict threshold
    fisher = _loop_fisher(model, data)
    if fisher_norm == "model":
        groups = [list(fisher)]
    else:
        groups = [list(names) for names in LAYER_PARAMS.values()]
    f_hat = {}
    for names in groups:
        lo = min(float(fisher[n].min()) for n in names)
        hi = max(float(fisher[n].max()) for n in names)
        f_hat.update({n: (fisher[n] - lo) / (hi - lo) for n in names})
    assert all(float((t - eps).abs().min()) > 1e-6 for t in f_hat.values())  # no borderline
    mask = {k: (t > eps).double() for k, t in f_hat.items()}
    total = sum(m.numel() for m in mask.values())
    share = sum(float(m.sum()) for m in mask.values()) / total
    assert 0 < share < 1
    if fisher_norm == "layer":  # every layer has its own maximum above epsilon
        assert all(float(mask[names[0]].max()) == 1.0 for names in LAYER_PARAMS.values())

    objective = alg.local_objective(model, data, received, _ctx())
    assert model.training  # mode restored after the Fisher

    def current() -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in model.named_parameters()}

    smooth, elastic, grads = _reference_terms(current(), received, mask, received_layers,
                                              gen, elg)
    assert smooth > 0 and elastic > 0
    penalty = objective.penalty(model)
    assert float(penalty.detach()) == pytest.approx(lambda1 * smooth + lambda2 * elastic, rel=1e-9)
    metrics = objective.metrics()
    assert metrics["loss_gen"] == pytest.approx(smooth, rel=1e-9)
    assert metrics["loss_elg"] == pytest.approx(elastic, rel=1e-9)
    assert metrics["fisher_constrained_share"] == pytest.approx(share)

    penalty.backward()
    for name, p in model.named_parameters():
        if name not in grads:
            assert p.grad is None or torch.all(p.grad == 0), name
            continue
        g_gen, g_elg = grads[name]
        expected = lambda1 * g_gen + lambda2 * g_elg
        assert torch.allclose(p.grad, expected, rtol=1e-9, atol=1e-12), name

    # the mask is fixed at the start model; the penalty follows the current parameters
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    smooth, elastic, _ = _reference_terms(current(), received, mask, received_layers, gen, elg)
    assert float(objective.penalty(model).detach()) == pytest.approx(
        lambda1 * smooth + lambda2 * elastic, rel=1e-9
    )


def test_elastic_pull_on_every_parameter_without_the_fisher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``elg_mask="all"`` (the ablation without the Fisher mask): ``M = 1`` everywhere, so
    ``L_elg = ||theta - Theta||`` over every received parameter; the Fisher is never
    computed and the whole model counts as constrained."""
    import genefl.algorithms.genefl as genefl_module

    def no_fisher(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Fisher was computed")

    monkeypatch.setattr(genefl_module, "fisher_diagonal", no_fisher)
    lambda1, lambda2, received_layers = 0.3, 2.0, ["1", "4"]
    model = _tiny_model()
    alg = _genefl(model, lambda1=lambda1, lambda2=lambda2, elg_mask="all")
    received = _perturbed(model, received_layers)
    objective = alg.local_objective(model, _data(), received, _ctx())
    params = {k: v.detach() for k, v in model.named_parameters()}
    ones = {k: torch.ones_like(v) for k, v in params.items()}
    smooth, elastic, _ = _reference_terms(params, received, ones, received_layers,
                                          "layer-norm", "norm")
    diff_sq = sum(float(((params[n] - received[n]) ** 2).sum())
                  for layer in received_layers for n in LAYER_PARAMS[layer])
    assert elastic == pytest.approx(math.sqrt(diff_sq))  # the plain distance, no mask
    penalty = objective.penalty(model)
    assert float(penalty.detach()) == pytest.approx(lambda1 * smooth + lambda2 * elastic,
                                                    rel=1e-9)
    assert objective.metrics()["fisher_constrained_share"] == 1.0
    assert GeneFLParams().elg_mask == "fisher"  # the paper's mask stays the default


def test_penalty_has_zero_gradient_at_the_cluster_model() -> None:
    """A client that starts from the cluster model: both plain norms are 0 there and their
    subgradient is 0 (no NaN from the norm's kink)."""
    model = _tiny_model()
    alg = _genefl(model, epsilon=0.1)
    received = _state(model)
    objective = alg.local_objective(model, _data(), received, _ctx())
    penalty = objective.penalty(model)
    assert float(penalty.detach()) == 0.0
    penalty.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.all(p.grad == 0), name


# -- baselines' defaults ------------------------------------------------------------
def test_fedavg_defaults_exchange_every_layer() -> None:
    model = _tiny_model()
    alg = FedAvg(NoParams(), list_layers(model), num_clusters=2)
    assert isinstance(alg, Algorithm)
    before, after = _before_after(model)
    assert alg.select_upload(before, after, _ctx()) == ["0", "1", "4"]
    assert alg.download_layers(0, "known") == ["0", "1", "4"]
    assert alg.learngene_layers(1) == ["0", "1", "4"]
    assert alg.instructions(0, "known") == {}
    assert alg.local_objective(model, _data(), {}, _ctx()) is None
    fresh = {"a": torch.tensor([1.0]), "b": torch.tensor([2.0])}
    new = alg.init_new_client(fresh, {"b": torch.tensor([9.0])}, _ctx())
    assert float(new["a"]) == 1.0 and float(new["b"]) == 9.0


def test_default_aggregate_uniform_and_sample_weighted() -> None:
    """Cluster value w = 0; uploads w = 1 (10 samples) and w = 4 (30 samples), b only
    from the first.  Uniform: w = 2.5, b = 3.  By samples: w = (10 + 120) / 40 = 3.25."""
    model = _tiny_model()
    alg = FedAvg(NoParams(), list_layers(model), num_clusters=1)
    current = {"w": torch.zeros(1), "b": torch.zeros(1), "c": torch.ones(1)}
    uploads = [
        Upload(0, 0, ("x",), {"w": torch.tensor([1.0]), "b": torch.tensor([3.0])}, 10),
        Upload(1, 0, ("x",), {"w": torch.tensor([4.0])}, 30),
    ]
    out = alg.aggregate(0, current, uploads)
    assert float(out["w"]) == pytest.approx(2.5) and float(out["b"]) == pytest.approx(3.0)
    assert float(out["c"]) == 1.0
    alg.aggregate_weighting = "samples"
    out = alg.aggregate(0, current, uploads)
    assert float(out["w"]) == pytest.approx(3.25) and float(out["b"]) == pytest.approx(3.0)


def test_local_exchanges_nothing() -> None:
    model = _tiny_model()
    alg = Local(NoParams(), list_layers(model), num_clusters=2)
    before, after = _before_after(model)
    assert alg.select_upload(before, after, _ctx()) == []
    assert alg.download_layers(0, "known") == alg.download_layers(0, "agnostic") == []
    assert alg.learngene_layers(0) == []
