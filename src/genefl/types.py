"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: Tensors keyed by their ``state_dict`` name (``"features.0.weight"``).
ParamDict = dict[str, torch.Tensor]
ReadOnlyParams = Mapping[str, torch.Tensor]
