"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-18 after kuangliu/pytorch-cifar,
and He et al.'s ResNet-20 (CPU-sized, with ResNet-18's layer-size profile).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genefl.errors import ConfigError
from genefl.models.init import materialise
from genefl.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity or 1x1 conv+BN shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages for small images: a 3x3 conv + BN stem (no
    max-pool), stages ``layer1, layer2, ...`` (stride 2 from the second on), global
    average pooling and a linear head. Fully convolutional up to the pool, so any image
    size works.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int],
        blocks: Sequence[int],
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}"
            )
        if len(widths) != len(blocks) or not widths:
            raise ConfigError(f"widths {widths!r} and blocks {blocks!r} must pair up")
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.stages: list[str] = []
        for i, (planes, count) in enumerate(zip(widths, blocks)):
            self.stages.append(f"layer{i + 1}")
            self.add_module(self.stages[-1], self._make_layer(planes, count, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[-1] * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        blocks = []
        for s in [stride] + [1] * (num_blocks - 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(batch, num_classes)``."""
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages:
            out = getattr(self, stage)(out)
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


class ResNet18(CifarResNet):
    """ResNet-18 for small images: ~11.17 M parameters with 10 classes."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__(in_channels, num_classes, (64, 128, 256, 512), (2, 2, 2, 2))


class ResNet20(CifarResNet):
    """He et al. (2016, §4.2) CIFAR ResNet-20: 16-32-64 channels, 3 blocks per stage,
    BN after every convolution and 1x1 conv + BN projection shortcuts where the shape
    changes (option B); 0.27 M parameters with 10 classes.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__(in_channels, num_classes, (16, 32, 64), (3, 3, 3))


@register_model("resnet18")
def resnet18(
    in_channels: int, num_classes: int, image_size: int, generator: torch.Generator
) -> nn.Module:
    """ResNet-18 for small images (3x3 stem, no max-pool; the paper's network)."""
    return materialise(lambda: ResNet18(in_channels, num_classes), generator)


@register_model("resnet20")
def resnet20(
    in_channels: int, num_classes: int, image_size: int, generator: torch.Generator
) -> nn.Module:
    """ResNet-20 for small images (He et al. 2016; 0.27 M parameters, CPU-sized)."""
    return materialise(lambda: ResNet20(in_channels, num_classes), generator)
