"""iDLG gradient inversion (Zhao, Mopuri, Bilen 2020: "iDLG: Improved Deep Leakage from
Gradients"; code ``PatrickZH/Improved-Deep-Leakage-from-Gradients``), as pure functions.

A malicious server holds the gradient a victim computed on its private images (batch
``B``, cross-entropy averaged over the batch) for the parameters it can see. It

1. infers the labels from the last linear layer's weight gradient (``classes x
   features``): with a batch of one and non-negative features (ReLU), the row of the true
   class is the only row whose sum is negative, so the label is the row with the smallest
   sum (for ``B > 1``: the ``B`` rows with the smallest sums, which assumes distinct
   labels). When the server does not see that layer it optimises soft labels jointly
   with the images, as DLG does (Zhu et al. 2019);
2. optimises dummy images (``randn`` start, pixel space ``[0, 1]``) with L-BFGS so that
   their gradient matches the observed one in squared L2, over the observed tensors only;
3. returns the dummy with the lowest matching loss seen, clamped to ``[0, 1]``.

Beyond iDLG: the optimisation stops early once the best loss has stalled (no relative
improvement of 1e-4 in 25 steps; L-BFGS with a fixed step often stalls for good in a
local minimum), so a 300-step budget is not spent waiting, and a diverging run keeps its
best point instead of ending at NaN; and the attacker keeps the best of several random
starts by matching loss (``restarts``; it needs no ground truth to choose). Both only make
the attacker stronger.

The model is evaluated in ``eval`` mode (normalisation layers use their running
statistics), so a single image has a well-defined gradient in every supported model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from genefl.privacy.gradients import Reconstruction, best_of_restarts, parameter_gradients


@dataclass(frozen=True)
class IDLGSettings:
    """L-BFGS settings of the inversion (iDLG's defaults: lr 1, 300 steps of up to 20
    function evaluations each).
    """

    iterations: int = 300
    max_eval_per_step: int = 20
    lr: float = 1.0
    #: stop once the matching loss is below this (the gradient is matched)
    loss_floor: float = 1e-10
    #: L-BFGS line search: ``None`` (iDLG's fixed step) or ``"strong_wolfe"``
    line_search: str | None = None
    #: stop early once the best loss has not improved by a relative ``min_improvement``
    #: within this many steps (L-BFGS often stalls in a local minimum; 0 = never)
    patience: int = 25
    min_improvement: float = 1e-4
    #: independent random starts; the one with the lowest matching loss is kept (the
    #: server needs no ground truth to choose, so this only strengthens the attacker)
    restarts: int = 4


def matching_loss(
    dummy: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``sum over observed tensors of ||g_dummy - g_observed||^2``; a tensor with a bool
    mask (a partial upload) is compared on its sent entries only.
    """
    masks = masks or {}
    total = None
    for name, target in observed.items():
        diff = dummy[name] - target
        if name in masks:
            diff = diff[masks[name]]
        term = diff.pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("nothing observed: the attack needs at least one shared tensor")
    return total


def reconstruct_idlg(
    model: nn.Module,
    observed: Mapping[str, torch.Tensor],
    image_shape: tuple[int, int, int, int],
    num_classes: int,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    settings: IDLGSettings = IDLGSettings(),
) -> Reconstruction:
    """Reconstruct ``image_shape = (B, C, H, W)`` pixel images in ``[0, 1]`` whose gradient
    through ``model`` (the attacker's copy: true values where the server sees them, random
    elsewhere) matches ``observed`` (parameter name -> gradient).

    ``normalise`` maps pixels to the model's input space; ``labels`` (``(B,)``) are the
    inferred labels, or ``None`` to optimise soft labels jointly (DLG). Of
    ``settings.restarts`` random starts the one with the lowest matching loss is returned
    (``steps`` counts the steps of all starts).
    """
    return best_of_restarts(settings.restarts, lambda: _invert_once(
        model, observed, image_shape, num_classes, normalise, generator, labels, masks,
        settings,
    ))


def _invert_once(
    model: nn.Module,
    observed: Mapping[str, torch.Tensor],
    image_shape: tuple[int, int, int, int],
    num_classes: int,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    labels: torch.Tensor | None,
    masks: Mapping[str, torch.Tensor] | None,
    settings: IDLGSettings,
) -> Reconstruction:
    """One L-BFGS run from one random start (see :func:`reconstruct_idlg`)."""
    model.eval()
    device = next(model.parameters()).device
    names = list(observed)
    dummy = torch.randn(image_shape, generator=generator).to(device).requires_grad_(True)
    variables = [dummy]
    inferred = labels is not None
    if labels is None:
        label_var = torch.randn(image_shape[0], num_classes, generator=generator).to(device)
        label_var.requires_grad_(True)
        variables.append(label_var)
        target_labels: torch.Tensor = label_var
    else:
        target_labels = labels.to(device)
    optimiser = torch.optim.LBFGS(
        variables, lr=settings.lr, max_iter=settings.max_eval_per_step,
        tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn=settings.line_search,
    )
    best_loss = math.inf
    best_images = dummy.detach().clone()
    best_labels = target_labels.detach().clone()

    def closure() -> torch.Tensor:
        nonlocal best_loss, best_images, best_labels
        optimiser.zero_grad()
        grads = parameter_gradients(
            model, names, normalise(dummy), target_labels, create_graph=True
        )
        loss = matching_loss(grads, observed, masks)
        value = float(loss.detach())
        if math.isfinite(value) and value < best_loss:
            best_loss = value
            best_images = dummy.detach().clone()
            best_labels = target_labels.detach().clone()
        found = torch.autograd.grad(loss, variables, allow_unused=True)
        for var, g in zip(variables, found):
            var.grad = torch.zeros_like(var) if g is None else g
        return loss

    steps = 0
    mark, mark_step = math.inf, 0
    while steps < settings.iterations:
        loss = optimiser.step(closure)
        steps += 1
        value = float(loss.detach())
        if not math.isfinite(value) or best_loss < settings.loss_floor:
            break
        if not torch.isfinite(dummy).all():
            break
        if best_loss < mark * (1.0 - settings.min_improvement):
            mark, mark_step = best_loss, steps
        elif settings.patience and steps - mark_step >= settings.patience:
            break
    final_labels = best_labels if inferred else best_labels.argmax(dim=-1)
    return Reconstruction(
        images=best_images.clamp(0.0, 1.0).cpu(),
        labels=final_labels.cpu(),
        loss=best_loss,
        steps=steps,
        labels_inferred=inferred,
    )
