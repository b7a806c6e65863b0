"""Bring your own model: a builder registered with ``@register_model``.

Registers a two-layer MLP as ``--model mlp`` and runs GENE-FL with it through the Python
API (``genefl.run``); ``genefl.cli.main(["run", "--model", "mlp", ...])`` in this script
would do the same from the command line's options.

Usage: python examples/custom_model.py [--tiny] [--out OUT]
"""

from __future__ import annotations

import torch
from _common import parse_args, scale
from torch import nn

import genefl
from genefl.models import materialise, model_names, register_model


@register_model("mlp")
def mlp(in_channels: int, num_classes: int, image_size: int,
        generator: torch.Generator) -> nn.Module:
    """Two-layer MLP with LayerNorm."""
    return materialise(lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.LayerNorm(64),
        nn.ReLU(), nn.Linear(64, num_classes)), generator)


if __name__ == "__main__":
    args = parse_args(__doc__, "custom_model")
    print("models:", ", ".join(model_names()))
    result = genefl.run(model="mlp", output_dir=args.out, overwrite=True, **scale(args.tiny))
    print(result.summary())
    print(f"written to {result.output_dir}/")
