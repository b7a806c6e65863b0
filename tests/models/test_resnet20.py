"""Issue 12 point 4: the CPU-sized CIFAR ResNet-20 (He et al. 2016) — shape, size, layer
list, the ParFed/FedFina split, the Fisher's fast path and a tiny GENE-FL/FedAvg run."""

from __future__ import annotations

import pytest
import torch
from conftest import make_dataset, vmap_names
from torch import nn

from genefl.algorithms.partial import PartialConvsParams, split_convs
from genefl.config import resolve
from genefl.engine.simulation import run_simulation
from genefl.method.fisher import fisher_diagonal
from genefl.models import build_model, list_layers
from genefl.models.layers import head_layer, is_shortcut, layer_table


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return build_model("resnet20", 3, 10, 32, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("c", "size"), [(1, 8), (1, 28), (3, 32)])
def test_forward_shape(c: int, size: int) -> None:
    net = build_model("resnet20", c, 7, size, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        assert net(torch.randn(2, c, size, size)).shape == (2, 7)


def test_parameter_count(model: nn.Module) -> None:
    # He et al.'s 0.27 M; projection shortcuts (option B) add 16*32 + 32*64 conv weights
    # and two BNs' 2*32 + 2*64 affine parameters.
    n = sum(p.numel() for p in model.parameters())
    assert 260_000 <= n <= 280_000
    assert n == 272_474


def test_layer_list(model: nn.Module) -> None:
    layers = list_layers(model)
    # stem (2) + 9 blocks x (conv1, bn1, conv2, bn2) (36) + 2 shortcuts x (conv, bn) (4)
    # + linear (1) = 43; BN right after every convolution
    assert [layer.kind for layer in layers] == ["conv", "norm"] * 21 + ["linear"]
    assert head_layer(layers) == "linear"
    # the rows results.json keeps for `genefl learngene`: BN = weight, bias + 2 statistics
    assert layer_table(layers)[:2] == [
        {"name": "conv1", "kind": "conv", "params": 3 * 16 * 9, "bytes": 4 * 3 * 16 * 9},
        {"name": "bn1", "kind": "norm", "params": 2 * 16, "bytes": 4 * 4 * 16},
    ]
    assert [layer.name for layer in layers if is_shortcut(layer)] == [
        "layer2.0.shortcut.0", "layer2.0.shortcut.1",
        "layer3.0.shortcut.0", "layer3.0.shortcut.1",
    ]
    assert sum(layer.numel for layer in layers) == sum(
        t.numel() for t in model.state_dict().values() if t.is_floating_point()
    )


def test_partial_split_is_the_last_four_main_path_convs(model: nn.Module) -> None:
    layers = list_layers(model)
    main_path = [la for la in layers if la.kind == "conv" and not is_shortcut(la)]
    assert len(main_path) == 19  # c = max(1, round(4 * 19 / 17)) = 4
    assert split_convs(PartialConvsParams(), layers) == [
        "layer3.1.conv1", "layer3.1.conv2", "layer3.2.conv1", "layer3.2.conv2",
    ]


def test_fisher_takes_the_fast_path_and_equals_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = build_model("resnet20", 1, 4, 8, torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=g)
    ref = fisher_diagonal(net, x, y, method="vmap")
    seen = vmap_names(monkeypatch)
    got = fisher_diagonal(net, x, y, chunk_size=4)
    assert seen == []  # residual adds and shortcuts keep every layer on the fast path
    for name, want in ref.items():
        torch.testing.assert_close(got[name], want, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("method", ["genefl", "fedavg"])
def test_tiny_run(method: str) -> None:
    config, params = resolve({}, dict(
        method=method, model="resnet20", known_clients=4, agnostic_clients=4, clusters=2,
        known_rounds=1, agnostic_rounds=1, clients_per_round=2, local_epochs=1,
        batch_size=32, shards=2, device="cpu",
    ))
    results = run_simulation(config, params, [], dataset=make_dataset(per_class=12))
    assert results["num_layers"] == 43
    full = results["full_model_upload_bytes"]
    assert full == 2 * results["model_bytes"]
    if method == "fedavg":
        assert results["upload_bytes"] == full
    else:  # round 0 sends gamma = all 43 layers; the cluster learnGene never has the head
        assert results["upload_bytes"] == full
        assert all("linear" not in layers for layers in results["learngene_layers"].values())
        assert 0 < results["learngene_bytes"] <= results["model_bytes"]
