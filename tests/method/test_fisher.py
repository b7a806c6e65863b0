"""Fisher diagonal (SPEC §3.1) against a plain per-sample loop, and its normalisation/mask."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_conv_bn_linear, vmap_names
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


def _batch_stat_fisher(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The wrong reading: each sample's gradient through a train-mode forward of the whole
    batch (batch statistics, samples coupled), on a copy so running stats stay put."""
    total: dict[str, torch.Tensor] = {}
    for i in range(x.shape[0]):
        m = copy.deepcopy(model).train()
        names = [n for n, _ in m.named_parameters()]
        loss = F.cross_entropy(m(x)[i : i + 1], y[i : i + 1])
        for n, g in zip(names, torch.autograd.grad(loss, list(m.parameters()))):
            total[n] = total.get(n, 0) + g.detach() ** 2
    return {n: t / x.shape[0] for n, t in total.items()}


@pytest.mark.parametrize("method", ["exact", "vmap"])
def test_fisher_uses_running_stats_not_batch_stats(method: str) -> None:
    """A model handed over in train mode: the Fisher must equal the running-statistics
    reference and not the batch-statistics one (the two differ by far more than the
    tolerance here, so a Fisher computed in train mode fails)."""
    model = _tiny_model()
    x, y = _data()
    running = _loop_fisher(model, x, y)
    batch = _batch_stat_fisher(model, x, y)
    model.train()
    got = fisher_diagonal(model, x, y, method=method)
    assert model.training
    for name in ("0.weight", "1.weight", "1.bias"):
        assert torch.allclose(got[name], running[name], rtol=1e-5, atol=1e-12), name
        gap = float((batch[name] - running[name]).abs().max() / running[name].abs().max())
        assert gap > 0.05, (name, gap)  # the references really differ


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


# --------------------------------------------------------------------------- fast path


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _randomise_norm_stats(model: nn.Module, seed: int = 3) -> nn.Module:
    """Non-trivial running statistics and affine parameters (all normalisation layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                if m.weight is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model


def _check_exact(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, monkeypatch: pytest.MonkeyPatch,
    expect_vmap: set[str] = frozenset(), chunk_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Fast == vmap == loop within rel 1e-5; exactly ``expect_vmap`` took the fallback."""
    loop = _loop_fisher(model, x, y)
    ref = fisher_diagonal(model, x, y, chunk_size=chunk_size, method="vmap")
    seen = vmap_names(monkeypatch)
    got = fisher_diagonal(model, x, y, chunk_size=chunk_size)
    assert set(seen) == set(expect_vmap)
    assert list(got) == list(ref) == list(loop)
    for name, want in loop.items():
        assert got[name].shape == want.shape, name
        assert float(want.abs().max()) > 0, name  # non-degenerate reference
        assert _rel_err(got[name], want) < 1e-5, name
        assert _rel_err(ref[name], want) < 1e-5, name
    return got


def _images(n: int, c: int, h: int, w: int | None = None, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, h if w is None else w, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=g)


def test_fast_path_small_cnn_matches_vmap_and_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from genefl.models import build_model

    model = build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0)).double()
    _randomise_norm_stats(model)
    x, y = _images(6, 1, 28, classes=10)
    _check_exact(model, x, y, monkeypatch, chunk_size=4)  # chunks 4, 2


def test_fast_path_residual_block_with_bn_shortcut(monkeypatch: pytest.MonkeyPatch) -> None:
    from genefl.models.resnet import BasicBlock

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        BasicBlock(4, 4, stride=1),  # identity shortcut
        BasicBlock(4, 6, stride=2),  # 1x1 conv + BN shortcut
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    ).double()
    _randomise_norm_stats(model)
    x, y = _images(5, 3, 8, classes=5)
    got = _check_exact(model, x, y, monkeypatch)
    assert "4.shortcut.1.weight" in got and "4.shortcut.0.weight" in got


@pytest.mark.parametrize(
    "conv",
    [
        dict(stride=2, padding=1),
        dict(dilation=2, padding=2),
        dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
        dict(padding="same", kernel_size=4),
        dict(padding="valid"),
        dict(padding=1, padding_mode="reflect"),
        dict(padding=(1, 2), padding_mode="circular", stride=2),
        dict(groups=2, padding=1),
        dict(kernel_size=1, bias=False),
    ],
    ids=str,
)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_fast_path_conv_variants_with_bias(
    conv: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    options = dict(kernel_size=3, bias=True) | conv
    layer = nn.Conv2d(4, 6, **options)
    out = layer(torch.zeros(1, 4, 9, 8)).shape
    model = nn.Sequential(
        layer, nn.Tanh(), nn.Flatten(), nn.Linear(out[1] * out[2] * out[3], 3)
    ).double()
    x, y = _images(6, 4, 9, 8)
    _check_exact(model, x, y, monkeypatch)


def test_fast_path_conv1d_groupnorm_layernorm_and_sequence_linear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(n, C, L) signals: Conv1d, GroupNorm, then a Linear and LayerNorm per position."""

    class SeqModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3, padding=1, stride=2)
            self.gn = nn.GroupNorm(2, 4)
            self.proj = nn.Linear(4, 5)  # applied to (n, L, 4): extra dim
            self.ln = nn.LayerNorm(5)
            self.head = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.gn(self.conv(x))).transpose(1, 2)
            return self.head(torch.tanh(self.ln(self.proj(h))).mean(1))

    torch.manual_seed(0)
    model = _randomise_norm_stats(SeqModel().double())
    g = torch.Generator().manual_seed(2)
    x = torch.randn(7, 2, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    _check_exact(model, x, y, monkeypatch)


def test_module_called_twice_falls_back_and_stays_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(4, 6)
            self.mid = nn.Linear(6, 6)
            self.out = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.inp(x))
            h = torch.tanh(self.mid(torch.tanh(self.mid(h))))  # called twice
            return self.out(h)

    torch.manual_seed(0)
    model = Twice().double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,))
    _check_exact(model, x, y, monkeypatch, expect_vmap={"mid.weight", "mid.bias"})


def test_shared_and_functionally_reused_parameters_fall_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(5, 5)
            self.b = nn.Linear(5, 5)
            self.b.weight = self.a.weight  # shared by two modules, each called once
            self.c = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.tanh(self.b(torch.tanh(self.a(x))))
            # c.weight is also used outside c's own call
            return self.c(h) + 0.1 * F.linear(h, self.c.weight)

    torch.manual_seed(0)
    model = Tied().double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,))
    got = _check_exact(model, x, y, monkeypatch, expect_vmap={"a.weight", "c.weight"})
    assert set(got) == {"a.weight", "a.bias", "b.bias", "c.weight", "c.bias"}


def test_unsupported_modules_and_batch_stat_bn_fall_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    prelu = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.PReLU(2), nn.Flatten(), nn.Linear(18, 3)
    ).double()
    x, y = _images(5, 1, 5)
    _check_exact(prelu, x, y, monkeypatch, expect_vmap={"1.weight"})
    monkeypatch.undo()
    # eval-mode BN without running statistics normalises with batch statistics: the
    # samples interact, so the whole model takes the (per-sample) vmap reference
    no_stats = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Flatten(),
        nn.Linear(18, 3),
    ).double()
    seen = vmap_names(monkeypatch)
    got = fisher_diagonal(no_stats, x, y)
    ref = fisher_diagonal(no_stats, x, y, method="vmap")
    assert set(seen) == set(got)
    for name in got:
        assert torch.equal(got[name], ref[name])


def test_fast_path_sub_chunks_and_blocks_under_small_budgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import genefl.method.fisher as fisher

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Unflatten(1, (3, 9)),
        nn.Linear(9, 4), nn.Flatten(), nn.Linear(12, 3),
    ).double()
    x, y = _images(7, 2, 5)
    full = fisher_diagonal(model, x, y)
    monkeypatch.setattr(fisher, "PER_SAMPLE_BUDGET_BYTES", 1)  # one sample at a time
    monkeypatch.setattr(fisher, "_BLOCK_BYTES", 1)  # one column of dW at a time
    small = fisher_diagonal(model, x, y, chunk_size=3)
    for name in full:
        assert torch.allclose(full[name], small[name], rtol=1e-12, atol=0), name


def _hook_dicts(model: nn.Module) -> list[dict]:
    return [
        d for m in model.modules()
        for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,
                  m._backward_pre_hooks)
    ]


def test_fast_path_restores_mixed_modes_and_removes_hooks() -> None:
    from genefl.models import build_model

    model = build_model("cnn", 1, 10, 8, torch.Generator().manual_seed(0))
    model.train()
    model.block2.eval()  # a mixed state must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 3, 9, 1])
    fisher_diagonal(model, x, y)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not any(_hook_dicts(model))
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # an error mid-way (label out of range) still removes the hooks and restores the modes
    with pytest.raises((IndexError, RuntimeError)):
        fisher_diagonal(model, x, torch.tensor([0, 3, 10, 1]))
    assert not any(_hook_dicts(model))
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_fisher_rejects_bad_arguments() -> None:
    model = _tiny_model()
    x, y = _data(3)
    for method in ("exact", "vmap"):
        with pytest.raises(ValueError):
            fisher_diagonal(model, x[:0], y[:0], method=method)
    with pytest.raises(ValueError):
        fisher_diagonal(model, x, y, method="kfac")
    with pytest.raises(ValueError):
        fisher_diagonal(model, x, y[:2])


def test_float32_fast_path_close_to_vmap() -> None:
    from genefl.models import build_model

    model = build_model("cnn", 1, 10, 28, torch.Generator().manual_seed(0))
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    y = torch.arange(8) % 10
    got = fisher_diagonal(model, x, y, chunk_size=5)
    ref = fisher_diagonal(model, x, y, method="vmap")
    for name in ref:
        assert got[name].dtype == torch.float32
        assert _rel_err(got[name], ref[name]) < 1e-5, name


def test_integer_inputs_and_first_layer_without_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token ids (no input gradient exists); an embedding is not a fast module."""

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(11, 4)
            self.proj = nn.Linear(4, 6, bias=False)
            self.act = nn.ReLU(inplace=True)
            self.head = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.act(self.proj(self.embed(x))).mean(1))

    torch.manual_seed(0)
    model = Bag().double()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 11, (6, 5), generator=g), torch.randint(0, 3, (6,), generator=g)
    _check_exact(model, x, y, monkeypatch, expect_vmap={"embed.weight"})


def test_partly_frozen_layers_and_more_norm_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bias-only training (weights frozen), BatchNorm1d on (n, C), multi-dim LayerNorm."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.LayerNorm([3, 4, 4]), nn.Tanh(), nn.Flatten(),
        nn.Linear(48, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3),
    ).double()
    _randomise_norm_stats(model)
    model[0].weight.requires_grad_(False)
    model[4].weight.requires_grad_(False)
    model[5].bias.requires_grad_(False)
    x, y = _images(6, 2, 6)
    got = _check_exact(model, x, y, monkeypatch)
    assert set(got) == {
        "0.bias", "1.weight", "1.bias", "4.bias", "5.weight", "7.weight", "7.bias"
    }
