"""How close a reconstruction is to the original: PSNR, SSIM and the recognisable share.

SSIM is scikit-image's ``structural_similarity`` (Wang et al. 2004; 7 x 7 uniform window,
``data_range`` 1, per channel then averaged), not a re-implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _pair(reconstructed: torch.Tensor, original: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if reconstructed.shape != original.shape:
        raise ValueError(
            f"shapes differ: {tuple(reconstructed.shape)} vs {tuple(original.shape)}"
        )
    a = reconstructed.detach().double().cpu().clamp(0, 1)
    b = original.detach().double().cpu().clamp(0, 1)
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    if a.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W); got {tuple(a.shape)}")
    return a, b


def psnr(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images in ``[0, 1]``, one value per image:
    ``10 log10(1 / MSE)`` after clamping both to ``[0, 1]`` (``inf`` for identical images).
    Shapes ``(B, C, H, W)`` or ``(C, H, W)``.
    """
    a, b = _pair(reconstructed, original)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Structural similarity (scikit-image) of images in ``[0, 1]`` after clamping, one
    value per image in ``[-1, 1]`` (1 for identical images). The window is 7 x 7, or the
    largest odd size that fits an image smaller than that. Shapes as :func:`psnr`.
    """
    from skimage.metrics import structural_similarity

    a, b = _pair(reconstructed, original)
    side = min(a.shape[-2:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3 x 3 pixels; got {tuple(a.shape)}")
    out = [
        structural_similarity(x.numpy(), y.numpy(), data_range=1.0, channel_axis=0,
                              win_size=win)
        for x, y in zip(a, b)
    ]
    return torch.tensor(out, dtype=torch.float64)


def recognisable_share(psnr_values: Sequence[float], threshold_db: float) -> float:
    """The fraction of images whose PSNR is above ``threshold_db`` (NaN for none)."""
    values = np.asarray(list(psnr_values), dtype=float)
    if values.size == 0:
        return math.nan
    return float(np.mean(values > threshold_db))
