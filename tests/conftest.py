"""Shared fixtures: tiny synthetic data sets and quick run configs."""

from __future__ import annotations

import numpy as np
import pytest

from genefl.data.datasets import ImageDataset


def make_dataset(
    num_classes: int = 6, per_class: int = 40, test_per_class: int = 10, size: int = 8,
    seed: int = 0,
) -> ImageDataset:
    """Separable toy images: each class is a distinct bright patch plus noise."""
    rng = np.random.default_rng(seed)

    def draw(n_per: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for c in range(num_classes):
            base = np.zeros((1, size, size))
            r, col = divmod(c, size // 2)
            base[0, (2 * r) % size : (2 * r) % size + 2, 2 * col : 2 * col + 2] = 200
            noise = rng.normal(0, 20, size=(n_per, 1, size, size))
            images.append(np.clip(base[None] + noise + 30, 0, 255).astype(np.uint8))
            labels.append(np.full(n_per, c, dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    tx, ty = draw(per_class)
    vx, vy = draw(test_per_class)
    return ImageDataset("toy", tx, ty, vx, vy, num_classes)


@pytest.fixture
def toy_dataset() -> ImageDataset:
    return make_dataset()


def tiny_conv_bn_linear(
    bn_weight: list[float], bn_bias: list[float], running_mean: list[float],
    running_var: list[float],
):
    """Conv(1->2, 3x3) + BatchNorm(2) + ReLU + Linear(18 -> 3) in float64 on 5x5 inputs,
    with the given batch-norm affine parameters and running statistics."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)
    ).double()
    with torch.no_grad():
        bn = model[1]
        for tensor, values in ((bn.weight, bn_weight), (bn.bias, bn_bias),
                               (bn.running_mean, running_mean), (bn.running_var, running_var)):
            tensor.copy_(torch.tensor(values, dtype=torch.float64))
    return model


def vmap_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the parameter names the fast path hands to the vmap fallback."""
    import genefl.method.fisher as fisher

    seen: list[str] = []
    original = fisher._vmap_sums

    def spy(model, inputs, labels, chunk_size, names):
        seen.extend(names)
        return original(model, inputs, labels, chunk_size, names)

    monkeypatch.setattr(fisher, "_vmap_sums", spy)
    return seen
