"""Server-side checks of an upload before it is aggregated (issue 4).

A rejected upload is left out of the round's aggregation and logged with the client id
and the reason; if every upload of a cluster is rejected the cluster model keeps its
value. The checks are pure functions of the upload and the cluster model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch

from genefl.algorithms.base import Upload
from genefl.models.layers import Layer


def upload_problem(
    upload: Upload,
    current: Mapping[str, torch.Tensor],
    layers: Mapping[str, Layer],
    allowed: Collection[str],
    max_update_ratio: float,
) -> str | None:
    """Why ``upload`` must be rejected, or ``None`` if it is acceptable.

    Checks, in order: every declared layer exists and the method allows it; the tensors
    are exactly those of the declared layers; shapes match the cluster model; masks (if
    any) are boolean, of the tensor's shape, for uploaded tensors; every sent value is
    finite; and the update's norm ``||theta - Theta_k|| / max(||Theta_k||, 1)`` over the
    sent entries is at most ``max_update_ratio`` (``inf`` disables the bound).
    """
    unknown = [n for n in upload.layers if n not in layers]
    if unknown:
        return f"unknown layer(s) {', '.join(unknown[:3])}"
    refused = [n for n in upload.layers if n not in allowed]
    if refused:
        return f"layer(s) the method does not exchange: {', '.join(refused[:3])}"
    expected = {t for n in upload.layers for t in layers[n].tensor_names}
    sent = set(upload.params)
    if sent != expected:
        extra, missing = sorted(sent - expected), sorted(expected - sent)
        return f"tensors do not match its layers (extra {extra[:3]}, missing {missing[:3]})"
    diff_sq = base_sq = 0.0
    for name, tensor in upload.params.items():
        ref = current[name]
        if tuple(tensor.shape) != tuple(ref.shape):
            return f"{name} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
        mask = upload.masks.get(name)
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(ref.shape):
                return f"mask of {name} is not a boolean tensor of shape {tuple(ref.shape)}"
            values, ref_values = tensor[mask], ref[mask]
        else:
            values, ref_values = tensor, ref
        if not bool(torch.isfinite(values).all()):
            return f"{name} holds NaN or infinite values"
        diff_sq += float((values.double() - ref_values.double()).pow(2).sum())
        base_sq += float(ref_values.double().pow(2).sum())
    extra_masks = set(upload.masks) - sent
    if extra_masks:
        return f"masks for tensors not sent: {sorted(extra_masks)[:3]}"
    ratio = math.sqrt(diff_sq) / max(math.sqrt(base_sq), 1.0)
    if not ratio <= max_update_ratio:
        return f"update norm ratio {ratio:.3g} exceeds the bound {max_update_ratio:g}"
    return None
