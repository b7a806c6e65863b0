"""Fisher diagonal (SPEC §3.1) against a plain per-sample loop, and its normalisation/mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_conv_bn_linear
from torch import nn

from genefl.method.fisher import fisher_diagonal, fisher_mask, minmax_normalise


def _tiny_model() -> nn.Sequential:
    return tiny_conv_bn_linear([1.5, -0.7], [0.2, 0.3], [0.4, -0.3], [2.5, 0.3])


def _data(n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 5, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _loop_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reference: eval mode, one sample at a time, squared gradient, mean over samples."""
    model.eval()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p) for n, p in zip(names, params)}
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        for n, g in zip(names, grads):
            total[n] += g.detach() ** 2
    return {n: t / x.shape[0] for n, t in total.items()}


def test_fisher_matches_per_sample_loop() -> None:
    model = _tiny_model()
    x, y = _data()
    expected = _loop_fisher(model, x, y)
    model.train()
    got = fisher_diagonal(model, x, y)
    assert set(got) == set(expected) == {
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"
    }
    for name, ref in expected.items():
        assert got[name].shape == ref.shape
        assert torch.allclose(got[name], ref, rtol=1e-5, atol=1e-12), name
        # the reference is not degenerate (otherwise the check would be vacuous)
    assert all(float(ref.abs().sum()) > 0 for ref in expected.values())


def test_fisher_uses_running_stats_not_batch_stats() -> None:
    """A train-mode (batch-statistics) reference must differ, so the test above can fail."""
    model = _tiny_model()
    x, y = _data()
    eval_ref = _loop_fisher(model, x, y)
    model.train()
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)  # batch statistics
    grads = torch.autograd.grad(loss, params)
    assert not torch.allclose(grads[2] ** 2, eval_ref["1.weight"], rtol=1e-3)


def test_fisher_chunking_does_not_change_result() -> None:
    model = _tiny_model()
    x, y = _data(7)
    full = fisher_diagonal(model, x, y, chunk_size=128)
    chunked = fisher_diagonal(model, x, y, chunk_size=3)  # chunks of 3, 3, 1
    single = fisher_diagonal(model, x, y, chunk_size=1)
    for name in full:
        assert torch.allclose(full[name], chunked[name], rtol=1e-10, atol=1e-14)
        assert torch.allclose(full[name], single[name], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("training", [True, False])
def test_fisher_restores_mode_and_leaves_model_untouched(training: bool) -> None:
    model = _tiny_model()
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _data()
    fisher_diagonal(model, x, y, chunk_size=2)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats not updated, weights unchanged
    assert all(p.grad is None for p in model.parameters())


def test_fisher_skips_frozen_parameters_and_rejects_empty_input() -> None:
    model = _tiny_model()
    model[0].bias.requires_grad_(False)
    x, y = _data(3)
    got = fisher_diagonal(model, x, y)
    assert "0.bias" not in got and "0.weight" in got
    with pytest.raises(ValueError):
        fisher_diagonal(model, x[:0], y[:0])


def test_minmax_normalise_hand_values() -> None:
    """Global min 1, max 5 over both tensors: a=[1,3] -> [0, .5]; b=[5,2] -> [1, .25]."""
    fisher = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[5.0, 2.0]])}
    out = minmax_normalise(fisher)
    assert torch.allclose(out["a"], torch.tensor([0.0, 0.5]))
    assert torch.allclose(out["b"], torch.tensor([[1.0, 0.25]]))
    assert out["b"].shape == (1, 2)
    # input not modified
    assert torch.equal(fisher["a"], torch.tensor([1.0, 3.0]))


def test_minmax_normalise_constant_gives_zeros() -> None:
    fisher = {"a": torch.full((2, 2), 3.0), "b": torch.tensor([3.0])}
    out = minmax_normalise(fisher)
    assert torch.equal(out["a"], torch.zeros(2, 2))
    assert torch.equal(out["b"], torch.zeros(1))


def test_fisher_mask_threshold_is_strict() -> None:
    f_hat = {"a": torch.tensor([0.5, 0.5000001, 0.2, 1.0]), "b": torch.tensor([[0.0, 0.51]])}
    mask = fisher_mask(f_hat, 0.5)
    assert torch.equal(mask["a"], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert torch.equal(mask["b"], torch.tensor([[0.0, 1.0]]))
    assert mask["a"].dtype == f_hat["a"].dtype
    # epsilon 0 keeps the exact-zero minimum free; epsilon 1 constrains nothing
    assert torch.equal(fisher_mask(f_hat, 0.0)["b"], torch.tensor([[0.0, 1.0]]))
    assert float(sum(m.sum() for m in fisher_mask(f_hat, 1.0).values())) == 0.0
