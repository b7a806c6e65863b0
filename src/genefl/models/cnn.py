"""A small CNN for 8x8, 28x28 and 32x32 images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from genefl.errors import ConfigError
from genefl.models.init import materialise
from genefl.models.registry import register_model


class ConvBlock(nn.Module):
    """conv3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.act(self.norm(self.conv(x)))


def _image_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, Sequence) and len(image_size) == 2:
        return int(image_size[0]), int(image_size[1])
    raise ConfigError(f"image_size must be an int or (height, width), got {image_size!r}")


def _maybe_pool(height: int, width: int) -> tuple[nn.Module, int, int]:
    """A 2x2 max-pool while the short side is >= 4 pixels, else identity."""
    if min(height, width) >= 4:
        return nn.MaxPool2d(2), height // 2, width // 2
    return nn.Identity(), height, width


class SmallCNN(nn.Module):
    """Four conv blocks and a two-layer head, cheap enough for 2 CPU cores.

    A 2x2 max-pool follows blocks 1, 2 and 4, each only while the feature map is still
    at least 4 pixels on its short side (8x8 digits: 8 -> 4 -> 2; 28x28: 28 -> 14 -> 7
    -> 3; 32x32: 32 -> 16 -> 8 -> 4).

    Layers (by ``list_layers``): ``block1.conv``, ``block1.norm``, ...,
    ``block4.conv``, ``block4.norm``, ``fc1``, ``fc2``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        channels: Sequence[int] = (16, 32, 32, 64),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        height, width = _image_hw(image_size)
        if height < 4 or width < 4:
            raise ConfigError(
                f"SmallCNN needs images of at least 4x4 pixels, got {height}x{width}"
            )
        channels = tuple(channels)
        if len(channels) != 4 or any(c < 1 for c in channels):
            raise ConfigError(f"channels must be four positive ints, got {channels!r}")
        if in_channels < 1 or num_classes < 1 or hidden < 1:
            raise ConfigError(
                "in_channels, num_classes and hidden must be positive, got "
                f"{in_channels}, {num_classes}, {hidden}"
            )
        self.block1 = ConvBlock(in_channels, channels[0])
        self.pool1, height, width = _maybe_pool(height, width)
        self.block2 = ConvBlock(channels[0], channels[1])
        self.pool2, height, width = _maybe_pool(height, width)
        self.block3 = ConvBlock(channels[1], channels[2])
        self.block4 = ConvBlock(channels[2], channels[3])
        self.pool3, height, width = _maybe_pool(height, width)
        self.flatten = nn.Flatten()
        flat = channels[3] * height * width
        self.fc1 = nn.Linear(flat, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits of shape ``(batch, num_classes)``."""
        x = self.pool2(self.block2(self.pool1(self.block1(x))))
        x = self.pool3(self.block4(self.block3(x)))
        return self.fc2(self.act(self.fc1(self.flatten(x))))


@register_model("cnn")
def small_cnn(
    in_channels: int, num_classes: int, image_size: int, generator: torch.Generator
) -> nn.Module:
    """Small CNN: four conv-BN-ReLU blocks and a two-layer head (8x8 to 32x32 images)."""
    return materialise(lambda: SmallCNN(in_channels, num_classes, image_size), generator)
