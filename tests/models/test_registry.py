"""Issue 15, own model: a model the test defines, registered with ``@register_model``,
runs through the layer list, the Fisher (fast where it knows the layer, vmap otherwise),
the wire and a GENE-FL run; ``--model`` and ``genefl models`` list the registry."""

from __future__ import annotations

import pytest
import torch
from conftest import make_dataset, vmap_names
from torch import nn

from genefl.cli import main
from genefl.config import resolve
from genefl.engine.simulation import run_simulation
from genefl.errors import ConfigError
from genefl.method.fisher import fisher_diagonal
from genefl.models import (
    build_model,
    get_params,
    list_layers,
    materialise,
    model_names,
    register_model,
)
from genefl.models.layers import head_layer


class Scale(nn.Module):
    """A layer kind genefl does not know: one learnt gain per feature."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.empty(features))

    def reset_parameters(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.gain.copy_(1 + 0.1 * torch.rand(self.gain.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class TinyMLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int = 32) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.scale = Scale(hidden)
        self.act = nn.Tanh()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.scale(self.norm(self.fc1(self.flatten(x))))))


@register_model("test-mlp")
def tiny_mlp(in_channels: int, num_classes: int, image_size: int,
             generator: torch.Generator) -> nn.Module:
    """Tiny MLP with LayerNorm and a custom gain (test model)."""
    return materialise(
        lambda: TinyMLP(in_channels * image_size * image_size, num_classes), generator
    )


@register_model("test-naive")
def naive(in_channels: int, num_classes: int, image_size: int,
          generator: torch.Generator) -> nn.Module:
    """Built from the global RNG, as a first-time user would write it."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))


def test_registry_lists_builtin_and_registered_models(capsys) -> None:
    names = model_names()
    assert names[:2] == ["cnn", "resnet18"] and "test-mlp" in names
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("cnn") and "CNN" in line for line in out)
    assert any(line.startswith("test-mlp") and "LayerNorm and a custom gain" in line
               for line in out)


def test_unknown_model_lists_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"--model must be one of cnn, resnet18, .*test-mlp"):
        resolve({}, {"model": "vgg"})
    config, _ = resolve({}, {"model": "test-mlp"})
    assert config.model == "test-mlp"


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_model("cnn")(tiny_mlp)


def test_builders_are_deterministic_in_the_generator_only() -> None:
    for name in ("test-mlp", "test-naive"):
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        a = build_model(name, 1, 4, 8, torch.Generator().manual_seed(1))
        assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
        torch.manual_seed(999)
        b = build_model(name, 1, 4, 8, torch.Generator().manual_seed(1))
        c = build_model(name, 1, 4, 8, torch.Generator().manual_seed(2))
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
        assert not all(torch.equal(sa[k], sc[k]) for k in sa), name


def test_layer_list_of_a_registered_model() -> None:
    model = build_model("test-mlp", 1, 4, 8, torch.Generator().manual_seed(0))
    layers = list_layers(model)
    assert [(la.name, la.kind) for la in layers] == [
        ("fc1", "linear"), ("norm", "norm"), ("scale", "scale"), ("head", "linear")]
    assert head_layer(layers) == "head"
    assert sum(la.numel for la in layers) == sum(p.numel() for p in model.parameters())
    assert set(get_params(model, layers)) == set(model.state_dict())


def test_fisher_of_unknown_layer_falls_back_to_vmap_and_equals_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build_model("test-mlp", 1, 4, 8, torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (20,), generator=g)
    ref = fisher_diagonal(model, x, y, method="vmap")
    seen = vmap_names(monkeypatch)
    got = fisher_diagonal(model, x, y, chunk_size=7)
    assert seen == ["scale.gain"]  # only the unknown kind took the vmap path
    assert list(got) == list(ref) == [n for n, _ in model.named_parameters()]
    for name, want in ref.items():
        assert float(want.abs().max()) > 0, name
        torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-14)


def test_genefl_run_on_a_registered_model() -> None:
    """Both phases of GENE-FL end to end: learnGene uploads, Fisher, wire, new clients."""
    config, params = resolve({}, dict(
        model="test-mlp", known_clients=6, agnostic_clients=6, clusters=2, known_rounds=3,
        agnostic_rounds=2, clients_per_round=3, local_epochs=2, batch_size=16, shards=2,
        device="cpu", lr=0.05,
    ))
    results = run_simulation(config, params, [], dataset=make_dataset())
    assert results["num_layers"] == 4
    for chosen in results["learngene_layers"].values():
        assert chosen and set(chosen) <= {"fc1", "norm", "scale"}  # the head stays local
    assert 0 < results["upload_bytes"] < results["full_model_upload_bytes"]
    assert 0 < results["learngene_bytes"] < results["model_bytes"]
    # 2 of the toy set's separable classes per client: chance is 1/2
    assert results["known_accuracy"] > 0.8
