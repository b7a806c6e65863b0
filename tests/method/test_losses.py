"""GENE-FL's regularisers (SPEC §3.2): values and gradients against hand formulas."""

from __future__ import annotations

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


def test_smooth_loss_hand_value() -> None:
    """Layer a: (1^2 + 2^2 + 2^2) / 3 = 3.  Layer c: (1+1+1+4) / 4 = 1.75.  Total 4.75.
    ("free" is in no layer group and does not count.)"""
    loss = smooth_loss(_params(), _anchor(), GROUPS)
    assert loss.shape == ()
    assert abs(float(loss.detach()) - 4.75) < 1e-12


def test_smooth_loss_gradient_is_two_diff_over_layer_numel() -> None:
    params, anchor = _params(), _anchor()
    loss = smooth_loss(params, anchor, GROUPS)
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    grads = dict(zip(names, grads))
    numel = {"a.w": 3, "a.b": 3, "c.w": 4}  # the *layer's* element count, not the tensor's
    for n, k in numel.items():
        expected = 2 * (params[n].detach() - anchor[n]) / k
        assert torch.allclose(grads[n], expected, atol=1e-12), n
    assert grads["free"] is None or torch.all(grads["free"] == 0)


def test_smooth_loss_is_zero_at_anchor_and_without_groups() -> None:
    anchor = _anchor()
    params = {k: v.clone().requires_grad_(True) for k, v in anchor.items()}
    assert float(smooth_loss(params, anchor, GROUPS).detach()) == 0.0
    assert float(smooth_loss(_params(), anchor, []).detach()) == 0.0


def test_elastic_loss_hand_value() -> None:
    """Mask a.w=[1,0] -> (1*1)^2 = 1; c.w mask [[0,1],[1,1]] -> 1 + 1 + (1-3)^2 = 6.
    a.b and free absent from the masks -> free.  Total 7."""
    masks = {
        "a.w": torch.tensor([1.0, 0.0], dtype=torch.float64),
        "c.w": torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64),
    }
    loss = elastic_loss(_params(), _anchor(), masks)
    assert abs(float(loss.detach()) - 7.0) < 1e-12


def test_elastic_loss_gradient_and_masked_entries() -> None:
    params, anchor = _params(), _anchor()
    masks = {
        "a.w": torch.tensor([1.0, 0.0], dtype=torch.float64),
        "c.w": torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64),
    }
    loss = elastic_loss(params, anchor, masks)
    names = list(params)
    grads = dict(zip(names, torch.autograd.grad(
        loss, [params[n] for n in names], allow_unused=True
    )))
    for n, m in masks.items():
        expected = 2 * m * (params[n].detach() - anchor[n])
        assert torch.allclose(grads[n], expected, atol=1e-12), n
    # masked-out entries get exactly zero gradient even though they differ from the anchor
    assert float(grads["a.w"][1]) == 0.0
    assert float(grads["c.w"][0, 0]) == 0.0
    for n in ("a.b", "free"):  # not in the masks: unconstrained
        assert grads[n] is None or torch.all(grads[n] == 0)


def test_elastic_loss_empty_masks_is_zero() -> None:
    assert float(elastic_loss(_params(), _anchor(), {}).detach()) == 0.0
