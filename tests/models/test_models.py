from __future__ import annotations

import pytest
import torch
from torch import nn

from genefl.errors import ConfigError
from genefl.models import build_model, list_layers, model_names
from genefl.models.cnn import SmallCNN
from genefl.models.init import reset_parameters
from genefl.models.resnet import ResNet18


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return build_model("resnet18", 3, 10, 32, _gen(0))


@pytest.mark.parametrize(("c", "size"), [(1, 8), (1, 28), (3, 32)])
def test_small_cnn_layers_and_forward(c: int, size: int) -> None:
    model = build_model("cnn", c, 10, size, _gen(0))
    layers = list_layers(model)
    assert len(layers) == 10
    assert [layer.kind for layer in layers] == ["conv", "norm"] * 4 + ["linear", "linear"]
    assert model(torch.randn(2, c, size, size)).shape == (2, 10)


def test_small_cnn_rectangular_and_too_small() -> None:
    model = SmallCNN(3, 5, (12, 20))
    assert model(torch.randn(2, 3, 12, 20)).shape == (2, 5)
    with pytest.raises(ConfigError, match="4x4"):
        SmallCNN(1, 10, 3)


def test_resnet18_counts(resnet: nn.Module) -> None:
    n_params = sum(p.numel() for p in resnet.parameters())
    assert 11_100_000 <= n_params <= 11_300_000
    assert n_params == 11_173_962
    layers = list_layers(resnet)
    # stem conv1+bn1 (2) + 8 BasicBlocks x (conv1,bn1,conv2,bn2) (32)
    # + shortcut conv+bn in layer2.0, layer3.0, layer4.0 (6) + linear (1) = 41
    # i.e. 20 conv (1 + 16 + 3), 20 norm, 1 linear.
    assert len(layers) == 41
    kinds = [layer.kind for layer in layers]
    assert kinds.count("conv") == 20 and kinds.count("norm") == 20
    assert kinds.count("linear") == 1 and layers[-1].name == "linear"
    assert {f"layer{i}.0.shortcut.{j}" for i in (2, 3, 4) for j in (0, 1)} <= {
        layer.name for layer in layers
    }
    assert all("num_batches_tracked" not in n for layer in layers for n in layer.tensor_names)


def test_resnet18_last_four_convs(resnet: nn.Module) -> None:
    convs = [
        layer for layer in list_layers(resnet)
        if layer.kind == "conv" and "shortcut" not in layer.name
    ]
    last4 = convs[-4:]
    assert [layer.name for layer in last4] == [
        "layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2",
    ]
    # 512*256*9 + 3 * 512*512*9 = 1,179,648 + 3 * 2,359,296
    weights = sum(layer.param_numel for layer in last4)
    assert weights == 8_257_536
    assert sum(layer.nbytes for layer in last4) / 2**20 == 31.5


def test_resnet18_forward(resnet: nn.Module) -> None:
    resnet.eval()
    with torch.no_grad():
        assert resnet(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    model = ResNet18(in_channels=1, num_classes=7)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 7)


def test_reset_parameters_deterministic_per_seed() -> None:
    a = build_model("cnn", 1, 10, 8, _gen(1))
    b = build_model("cnn", 1, 10, 8, _gen(1))
    c = build_model("cnn", 1, 10, 8, _gen(2))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert not torch.equal(sa["block1.conv.weight"], sc["block1.conv.weight"])
    assert not torch.equal(sa["fc2.bias"], sc["fc2.bias"])
    # norms are deterministic
    assert torch.all(sa["block1.norm.weight"] == 1) and torch.all(sa["block1.norm.bias"] == 0)
    assert torch.all(sa["block1.norm.running_mean"] == 0)
    assert torch.all(sa["block1.norm.running_var"] == 1)
    assert int(sa["block1.norm.num_batches_tracked"]) == 0


def test_reset_parameters_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    build_model("cnn", 1, 10, 8, _gen(0))
    model = SmallCNN(1, 10, 8)
    torch.set_rng_state(state)
    reset_parameters(model, _gen(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_reset_parameters_matches_pytorch_default() -> None:
    torch.manual_seed(5)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(5, 6),
                        nn.GroupNorm(2, 4), nn.LayerNorm(6))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(5, 6),
                          nn.GroupNorm(2, 4), nn.LayerNorm(6))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
        model[1].num_batches_tracked.fill_(9)
    reset_parameters(model, _gen(5))
    sr, sm = ref.state_dict(), model.state_dict()
    assert all(torch.equal(sr[n], sm[n]) for n in sr)


def test_reset_parameters_rejects_unknown_modules() -> None:
    with pytest.raises(TypeError, match="Embedding"):
        reset_parameters(nn.Sequential(nn.Embedding(3, 2)), _gen(0))


def test_build_model_unknown_name() -> None:
    assert model_names()[:2] == ["cnn", "resnet18"]
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("vgg", 3, 10, 32, _gen(0))
