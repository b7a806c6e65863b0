"""The wire (SPEC §6): layer selection, packing and byte counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from genefl.engine.wire import (
    LayerChoices,
    Traffic,
    layers_bytes,
    pack,
    payload_bytes,
    select_layers,
    unpack,
)
from genefl.models.layers import list_layers


def _tiny_model() -> nn.Sequential:
    """Layers: "0" conv 1*2*3*3 + 2 = 20 elements; "1" batch norm 2+2 params + 2+2 float
    buffers = 8 (num_batches_tracked excluded); "4" linear 18*3 + 3 = 57.  Total 85."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)
    ).double()


def test_payload_bytes_is_element_count_times_four() -> None:
    payload = {
        "a": torch.zeros(2, 3, dtype=torch.float64),
        "b": torch.zeros(4),
        "c": torch.zeros(0),
    }
    assert payload_bytes(payload) == (6 + 4 + 0) * 4
    assert payload_bytes({}) == 0


def test_select_layers_returns_exactly_the_layer_tensors() -> None:
    model = _tiny_model()
    state = model.state_dict()
    layers = {layer.name: layer for layer in list_layers(model)}
    assert list(layers) == ["0", "1", "4"]
    bn = select_layers(state, layers, ["1"])
    assert set(bn) == {"1.weight", "1.bias", "1.running_mean", "1.running_var"}
    both = select_layers(state, layers, ["0", "4"])
    assert set(both) == {"0.weight", "0.bias", "4.weight", "4.bias"}
    for name, tensor in {**bn, **both}.items():
        assert torch.equal(tensor, state[name])
        assert tensor.data_ptr() != state[name].data_ptr()  # a copy
        assert not tensor.requires_grad
    # from named parameters (requires_grad) too
    params = dict(model.named_parameters())
    params.update(model.named_buffers())
    sel = select_layers(params, layers, ["4"])
    assert not sel["4.weight"].requires_grad
    assert select_layers(state, layers, []) == {}


def test_select_layers_unknown_layer_raises() -> None:
    model = _tiny_model()
    layers = {layer.name: layer for layer in list_layers(model)}
    with pytest.raises(KeyError):
        select_layers(model.state_dict(), layers, ["0", "fc"])


def test_bytes_of_layers_agree_with_payload() -> None:
    model = _tiny_model()
    layers = {layer.name: layer for layer in list_layers(model)}
    state = model.state_dict()
    assert layers_bytes(layers, ["0"]) == 20 * 4
    assert layers_bytes(layers, ["1"]) == 8 * 4
    assert layers_bytes(layers, ["4"]) == 57 * 4
    assert layers_bytes(layers, list(layers)) == 85 * 4
    for names in (["0"], ["1"], ["4"], ["0", "1", "4"]):
        assert payload_bytes(select_layers(state, layers, names)) == layers_bytes(layers, names)


def test_pack_unpack_round_trip_as_float32() -> None:
    payload = {
        "a": torch.tensor([[1.0, 1e-8 + 1.0], [-2.5, 3.0]], dtype=torch.float64),
        "b": torch.tensor([0.1], dtype=torch.float32),
    }
    arrays = pack(payload)
    assert set(arrays) == {"a", "b"}
    for k, a in arrays.items():
        assert isinstance(a, np.ndarray) and a.dtype == np.float32
        assert a.shape == tuple(payload[k].shape)
    back = unpack(arrays)
    for k, t in back.items():
        assert t.dtype == torch.float32
        assert torch.equal(t, payload[k].to(torch.float32))
    # packing copies: changing the array does not change the tensor
    arrays["b"][0] = 5.0
    assert float(payload["b"][0]) == pytest.approx(0.1)
    assert payload_bytes(back) == sum(a.nbytes for a in arrays.values())


def test_traffic_and_layer_choices_counters() -> None:
    t = Traffic(upload=1, download=2)
    t.add(Traffic(upload=10, download=20, init=3, signature=4, full_model_upload=5))
    assert (t.upload, t.download, t.init, t.signature, t.full_model_upload) == (11, 22, 3, 4, 5)
    c = LayerChoices()
    c.add(["b", "a"])
    c.add(["a"])
    assert c.counts == {"b": 1, "a": 2}
    assert c.render() == "b:1;a:2"
