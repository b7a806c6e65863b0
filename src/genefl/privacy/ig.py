"""Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020: "Inverting
Gradients -- How easy is it to break privacy in federated learning?"; code
``JonasGeiping/invertinggradients``), as pure functions.

The server holds the gradient a victim computed on its private images for the parameters
it can see (as for :mod:`genefl.privacy.idlg`). It optimises dummy images so that their
gradient points the same way as the observed one:

- loss: ``1 - cos(g_dummy, g_observed)``, the cosine taken over *every observed tensor
  at once* (the concatenation; a masked tensor of a partial upload contributes its sent
  entries only), plus ``tv`` times the total variation of the dummy (mean absolute
  difference of horizontal plus of vertical neighbours, in the model's input space);
- Adam (lr 0.1) on the dummy, with the *sign* of its gradient; the learning rate is
  multiplied by 0.1 after 3/8, 5/8 and 7/8 of the iterations;
- after every step the dummy is projected into the valid pixel box (pixels in ``[0, 1]``,
  in the model's input space); the start is ``randn`` in that space;
- labels: the inferred ones (iDLG's rule) when given, else soft labels optimised jointly
  (Adam on their logits, unsigned), as the reference code does;
- of ``restarts`` random starts the one whose final gradient matches best (the cosine
  loss, no ground truth) is returned.

The model is evaluated in ``eval`` mode, as for iDLG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from genefl.privacy.gradients import Reconstruction, best_of_restarts, parameter_gradients

#: added to the norms of the cosine so that an all-zero gradient gives a finite loss
EPS = 1e-12


@dataclass(frozen=True)
class IGSettings:
    """Settings of Inverting Gradients (the reference's defaults, except ``iterations``:
    4,800 there; ``genefl attack`` chooses its own budget).
    """

    iterations: int = 1000
    lr: float = 0.1
    #: weight of the total-variation prior
    tv: float = 1e-2
    #: independent random starts; the best by cosine matching loss is kept
    restarts: int = 1
    #: step on the sign of the image's gradient (the reference's ``signed``)
    signed: bool = True
    #: multiply the learning rate by 0.1 at 3/8, 5/8 and 7/8 of the iterations
    decay: bool = True


def cosine_loss(
    dummy: Mapping[str, torch.Tensor],
    observed: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``1 - <g, o> / (|g| |o|)`` with ``g``, ``o`` the dummy's and the observed gradient
    concatenated over every tensor of ``observed`` (for a tensor with a bool mask, its
    sent entries only).
    """
    masks = masks or {}
    dot = g_sq = o_sq = None
    for name, target in observed.items():
        g = dummy[name]
        if name in masks:
            g, target = g[masks[name]], target[masks[name]]
        terms = ((g * target).sum(), g.pow(2).sum(), target.pow(2).sum())
        if dot is None:
            dot, g_sq, o_sq = terms
        else:
            dot, g_sq, o_sq = dot + terms[0], g_sq + terms[1], o_sq + terms[2]
    if dot is None:
        raise ValueError("nothing observed: the attack needs at least one shared tensor")
    return 1.0 - dot / ((g_sq + EPS).sqrt() * (o_sq + EPS).sqrt())


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal neighbours plus that of vertical ones, of
    ``(B, C, H, W)`` images (the reference's ``TV``).
    """
    dx = (images[:, :, :, :-1] - images[:, :, :, 1:]).abs().mean()
    dy = (images[:, :, :-1, :] - images[:, :, 1:, :]).abs().mean()
    return dx + dy


def milestones(iterations: int) -> list[int]:
    """The steps after which the learning rate is divided by 10: 3/8, 5/8, 7/8 of them."""
    return [int(iterations * k / 8) for k in (3, 5, 7)]


def reconstruct_ig(
    model: nn.Module,
    observed: Mapping[str, torch.Tensor],
    image_shape: tuple[int, int, int, int],
    num_classes: int,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    settings: IGSettings = IGSettings(),
) -> Reconstruction:
    """Reconstruct ``image_shape = (B, C, H, W)`` pixel images in ``[0, 1]`` whose gradient
    through ``model`` (the attacker's copy) points like ``observed`` (name -> gradient).

    ``normalise`` maps pixels to the model's input space and must be affine per channel
    (``(x - mean) / std``): the valid box and the way back to pixels are read from
    ``normalise(0)`` and ``normalise(1)``. ``labels`` (``(B,)``) are inferred labels, or
    ``None`` to optimise soft labels jointly. Of ``settings.restarts`` random starts the
    one with the lowest final cosine loss is returned (``steps`` counts every start's).
    """
    return best_of_restarts(settings.restarts, lambda: _ig_once(
        model, observed, image_shape, num_classes, normalise, generator, labels, masks,
        settings,
    ))


def _ig_once(
    model: nn.Module,
    observed: Mapping[str, torch.Tensor],
    image_shape: tuple[int, int, int, int],
    num_classes: int,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    labels: torch.Tensor | None,
    masks: Mapping[str, torch.Tensor] | None,
    settings: IGSettings,
) -> Reconstruction:
    """One optimisation from one random start (see :func:`reconstruct_ig`)."""
    model.eval()
    device = next(model.parameters()).device
    names = list(observed)
    lo = normalise(torch.zeros(image_shape, device=device)).detach()
    hi = normalise(torch.ones(image_shape, device=device)).detach()
    low, high = torch.minimum(lo, hi), torch.maximum(lo, hi)
    dummy = torch.randn(image_shape, generator=generator).to(device).requires_grad_(True)
    variables = [dummy]
    inferred = labels is not None
    if labels is None:
        label_var = torch.randn(image_shape[0], num_classes, generator=generator).to(device)
        label_var.requires_grad_(True)
        variables.append(label_var)
        target: torch.Tensor = label_var
    else:
        target = labels.to(device)
    optimiser = torch.optim.Adam(variables, lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=milestones(settings.iterations), gamma=0.1
    )
    steps = 0
    for _ in range(settings.iterations):
        optimiser.zero_grad()
        grads = parameter_gradients(model, names, dummy, target, create_graph=True)
        loss = cosine_loss(grads, observed, masks)
        if settings.tv > 0:
            loss = loss + settings.tv * total_variation(dummy)
        found = torch.autograd.grad(loss, variables, allow_unused=True)
        for var, g in zip(variables, found):
            var.grad = torch.zeros_like(var) if g is None else g
        if settings.signed:
            dummy.grad.sign_()
        optimiser.step()
        if settings.decay:
            scheduler.step()
        with torch.no_grad():
            dummy.copy_(torch.maximum(torch.minimum(dummy, high), low))
        steps += 1
        if not torch.isfinite(dummy).all():
            break
    final = dummy.detach()
    score = cosine_loss(
        {k: v.detach() for k, v in parameter_gradients(model, names, final, target).items()},
        observed, masks,
    )
    pixels = ((final - lo) / (hi - lo)).clamp(0.0, 1.0)
    final_labels = target.detach() if inferred else target.detach().argmax(dim=-1)
    return Reconstruction(
        images=pixels.cpu(), labels=final_labels.cpu(), loss=float(score), steps=steps,
        labels_inferred=inferred,
    )
