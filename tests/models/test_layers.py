from __future__ import annotations

import pytest
import torch
from torch import nn

from genefl.models import (
    get_params,
    layer_tensor_names,
    list_layers,
    model_nbytes,
    set_params,
)
from genefl.models.cnn import SmallCNN


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(1, 10, 8)


def test_layer_names_kinds_and_tensor_names() -> None:
    layers = list_layers(_cnn())
    assert [layer.name for layer in layers] == [
        "block1.conv", "block1.norm", "block2.conv", "block2.norm",
        "block3.conv", "block3.norm", "block4.conv", "block4.norm", "fc1", "fc2",
    ]
    norm = layers[1]
    assert norm.param_names == ("block1.norm.weight", "block1.norm.bias")
    assert norm.buffer_names == ("block1.norm.running_mean", "block1.norm.running_var")
    assert norm.tensor_names == norm.param_names + norm.buffer_names
    assert norm.param_numel == 32 and norm.numel == 64  # 16 channels: weight+bias, 2 stats
    assert layers[-1].param_names == ("fc2.weight", "fc2.bias")


def test_num_batches_tracked_not_in_any_layer() -> None:
    model = _cnn()
    names = {n for layer in list_layers(model) for n in layer.tensor_names}
    tracked = [n for n in model.state_dict() if n.endswith("num_batches_tracked")]
    assert len(tracked) == 4
    assert names.isdisjoint(tracked)
    # every other state_dict entry belongs to exactly one layer
    assert names == set(model.state_dict()) - set(tracked)


def test_nbytes_is_numel_times_four() -> None:
    model = _cnn()
    layers = list_layers(model)
    sd = model.state_dict()
    for layer in layers:
        assert layer.nbytes == layer.numel * 4
        assert layer.numel == sum(sd[n].numel() for n in layer.tensor_names)
        assert layer.param_numel == sum(sd[n].numel() for n in layer.param_names)
    assert model_nbytes(layers) == sum(sd[n].numel() * 4 for layer in layers
                                       for n in layer.tensor_names)


def test_layer_tensor_names() -> None:
    layers = list_layers(_cnn())
    assert layer_tensor_names(layers, ["fc2", "block1.conv"]) == [
        "fc2.weight", "fc2.bias", "block1.conv.weight",
    ]
    with pytest.raises(KeyError, match="nope"):
        layer_tensor_names(layers, ["nope"])


def test_get_set_params_round_trip() -> None:
    model = _cnn()
    layers = list_layers(model)
    params = get_params(model, layers)
    assert set(params) == {n for layer in layers for n in layer.tensor_names}
    # clones, detached
    for name, t in params.items():
        assert not t.requires_grad
        assert t.data_ptr() != model.state_dict()[name].data_ptr()

    other = SmallCNN(1, 10, 8)
    set_params(other, params)
    for name, t in other.state_dict().items():
        if name in params:
            assert torch.equal(t, params[name])
    # mutating the returned dict does not touch the model
    params["fc2.bias"].add_(1.0)
    assert not torch.equal(model.fc2.bias, params["fc2.bias"])


def test_set_params_changes_only_named_tensors() -> None:
    model = _cnn()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    set_params(model, {"fc1.bias": torch.full_like(model.fc1.bias, 7.0),
                       "block2.norm.running_var": torch.full((32,), 3.0)})
    after = model.state_dict()
    for name, t in after.items():
        if name == "fc1.bias":
            assert torch.all(t == 7.0)
        elif name == "block2.norm.running_var":
            assert torch.all(t == 3.0)
        else:
            assert torch.equal(t, before[name]), name
    assert model.fc1.bias.requires_grad  # still a leaf parameter


def test_set_params_errors() -> None:
    model = _cnn()
    with pytest.raises(KeyError, match="fc9.weight"):
        set_params(model, {"fc9.weight": torch.zeros(1)})
    before = model.fc2.bias.clone()
    with pytest.raises(ValueError, match="shape"):
        set_params(model, {"fc2.bias": torch.zeros(10) + 5, "fc1.bias": torch.zeros(3)})
    assert torch.equal(model.fc2.bias, before)  # nothing copied on error


def test_list_layers_other_kinds() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.Embedding(5, 4))
    layers = list_layers(model)
    assert [(layer.name, layer.kind) for layer in layers] == [
        ("0", "linear"), ("2", "norm"), ("3", "embedding"),
    ]
    assert layers[1].buffer_names == ()
