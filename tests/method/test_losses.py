"""GENE-FL's regularisers (SPEC §3.2): values and gradients against hand formulas."""

from __future__ import annotations

import math

import pytest
import torch

from genefl.method.losses import elastic_loss, smooth_loss


def _params() -> dict[str, torch.Tensor]:
    return {
        "a.w": torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True),
        "a.b": torch.tensor([3.0], dtype=torch.float64, requires_grad=True),
        "c.w": torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True),
        "free": torch.tensor([5.0], dtype=torch.float64, requires_grad=True),
    }


def _anchor() -> dict[str, torch.Tensor]:
    return {
        "a.w": torch.tensor([0.0, 0.0], dtype=torch.float64),
        "a.b": torch.tensor([1.0], dtype=torch.float64),
        "c.w": torch.tensor([[0.0, 0.0], [0.0, 3.0]], dtype=torch.float64),
        "free": torch.tensor([0.0], dtype=torch.float64),
    }


GROUPS = [["a.w", "a.b"], ["c.w"]]


def test_smooth_loss_hand_values_of_each_form() -> None:
    """Differences: layer a (a.w, a.b) = [1, 2, 2] -> ||.||^2 = 9;
    layer c = [1, 1, 1, -2] -> ||.||^2 = 7.  ("free" is in no group and does not count.)
    layer-norm (Eq. 4): 3 + sqrt(7).  squared: 9/3 + 7/4 = 4.75.  model-norm: sqrt(16) = 4."""
    params, anchor = _params(), _anchor()
    default = smooth_loss(params, anchor, GROUPS)
    assert default.shape == ()
    assert float(default.detach()) == pytest.approx(3 + math.sqrt(7), rel=1e-12)
    assert float(smooth_loss(params, anchor, GROUPS, "squared").detach()) == pytest.approx(4.75)
    assert float(smooth_loss(params, anchor, GROUPS, "model-norm").detach()) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="L_gen"):
        smooth_loss(params, anchor, GROUPS, "l1")


def _grads(loss: torch.Tensor, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    return dict(zip(names, grads))


@pytest.mark.parametrize("form", ["layer-norm", "squared", "model-norm"])
def test_smooth_loss_gradient_of_each_form(form: str) -> None:
    """layer-norm: d / ||d_layer|| (a unit vector per layer, whatever its size);
    squared: 2 d / numel(layer); model-norm: d / ||d||."""
    params, anchor = _params(), _anchor()
    grads = _grads(smooth_loss(params, anchor, GROUPS, form), params)
    layer_sq = {"a.w": 9.0, "a.b": 9.0, "c.w": 7.0}
    numel = {"a.w": 3, "a.b": 3, "c.w": 4}  # the *layer's* element count, not the tensor's
    for n in numel:
        diff = params[n].detach() - anchor[n]
        if form == "layer-norm":
            expected = diff / math.sqrt(layer_sq[n])
        elif form == "squared":
            expected = 2 * diff / numel[n]
        else:
            expected = diff / 4.0
        assert torch.allclose(grads[n], expected, atol=1e-12), n
    assert grads["free"] is None or torch.all(grads["free"] == 0)
    if form == "layer-norm":  # the pull on each layer has norm 1 (times lambda1)
        a = torch.cat([grads["a.w"], grads["a.b"]])
        assert float(a.norm()) == pytest.approx(1.0)
        assert float(grads["c.w"].norm()) == pytest.approx(1.0)


@pytest.mark.parametrize("form", ["layer-norm", "squared", "model-norm"])
def test_smooth_loss_is_zero_with_zero_gradient_at_anchor(form: str) -> None:
    anchor = _anchor()
    params = {k: v.clone().requires_grad_(True) for k, v in anchor.items()}
    loss = smooth_loss(params, anchor, GROUPS, form)
    assert float(loss.detach()) == 0.0
    for n, g in _grads(loss, params).items():
        assert g is None or (torch.all(g == 0) and not torch.isnan(g).any()), n
    assert float(smooth_loss(_params(), anchor, [], form).detach()) == 0.0


MASKS = {
    "a.w": torch.tensor([1.0, 0.0], dtype=torch.float64),
    "c.w": torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64),
}


def test_elastic_loss_hand_values() -> None:
    """Mask a.w=[1,0] -> 1^2 = 1; c.w mask [[0,1],[1,1]] -> 1 + 1 + (1-3)^2 = 6.
    a.b and free absent from the masks -> free.  Squared form 7; plain norm sqrt(7)."""
    params, anchor = _params(), _anchor()
    assert float(elastic_loss(params, anchor, MASKS).detach()) == pytest.approx(math.sqrt(7))
    assert float(elastic_loss(params, anchor, MASKS, "squared").detach()) == pytest.approx(7.0)
    with pytest.raises(ValueError, match="L_elg"):
        elastic_loss(params, anchor, MASKS, "cube")


@pytest.mark.parametrize("form", ["norm", "squared"])
def test_elastic_loss_gradient_and_masked_entries(form: str) -> None:
    params, anchor = _params(), _anchor()
    grads = _grads(elastic_loss(params, anchor, MASKS, form), params)
    for n, m in MASKS.items():
        md = m * (params[n].detach() - anchor[n])
        expected = md / math.sqrt(7) if form == "norm" else 2 * md
        assert torch.allclose(grads[n], expected, atol=1e-12), n
    # masked-out entries get exactly zero gradient even though they differ from the anchor
    assert float(grads["a.w"][1]) == 0.0
    assert float(grads["c.w"][0, 0]) == 0.0
    for n in ("a.b", "free"):  # not in the masks: unconstrained
        assert grads[n] is None or torch.all(grads[n] == 0)


def test_elastic_loss_empty_masks_is_zero() -> None:
    assert float(elastic_loss(_params(), _anchor(), {}).detach()) == 0.0
