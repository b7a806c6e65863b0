"""Diagonal Fisher information of a client's model on its own data (SPEC §3.1).

``F_j = mean_n (d log p(y_n | x_n; theta) / d theta_j)^2`` — the mean over samples of
squared *per-sample* gradients of the cross-entropy, with the model in evaluation mode
(normalisation layers use their running statistics, so each sample's gradient is well
defined and independent of the other samples in a chunk).

Method ``"exact"`` (default; BackPACK's "SumGradSquared", written out here). One forward
pass over a chunk records the input ``x`` of every ``Linear``, ``Conv1d``/``Conv2d``,
``BatchNorm`` (running statistics), ``GroupNorm`` and ``LayerNorm`` module, and a tensor
hook on each such module's output records ``g = dL/d(output)`` during one backward pass of
the *summed* per-sample cross-entropy ``L = sum_n CE_n``. In evaluation mode the samples
do not interact, so ``CE_m`` does not depend on sample ``n``'s output for ``m != n`` and
``g_n = dCE_n/d(output_n)`` exactly: ``g`` holds every sample's own output gradient. A
module's parameter enters the output linearly per sample, so the per-sample parameter
gradient is a per-sample contraction of ``g_n`` with ``x_n``:

* Linear, ``x_n: (in,)``, ``g_n: (out,)``: ``dW_n = g_n x_n^T`` and
  ``sum_n dW_n^2 = (g^2)^T (x^2)`` (one matmul); ``sum_n db_n^2 = sum_n g_n^2``.
* Conv: with ``U_n = unfold(x_n)`` of shape ``(in*k*k, P)`` and ``G_n: (out, P)``,
  ``dW_n = G_n U_n^T`` (batched matmuls over a sub-chunk of samples, in cache-sized blocks
  of columns, each squared and summed over ``n`` at once), ``db_n = sum_p G_n[:, p]``.
* Normalisation: ``dw_n = sum_positions g_n * x_hat_n``, ``db_n = sum_positions g_n``,
  where ``x_hat`` is the module's own normalisation of its input without the affine part.

These are the per-sample gradients themselves, not an approximation; squaring and
summing over ``n`` gives ``n * F``. The backward pass asks autograd only for one parameter
per tapped module (enough for every hook to fire; ``.grad`` is never touched).

Exactness guards: a parameter takes the fast path only if, in every chunk, its module was
called exactly once, the module's output received a gradient, its saved input was not
modified in place afterwards, and the parameter has exactly one use in the autograd graph
(a parameter shared by two modules, a module called twice, or a weight also used
functionally elsewhere has more). Every other trainable parameter — of unsupported modules
too — is computed by the ``torch.func.vmap(grad)`` reference (method ``"vmap"``). A
``BatchNorm`` without running statistics normalises with batch statistics even in
evaluation mode (so samples interact); such a model is computed entirely by ``"vmap"``.
The fast path assumes the batch is dim 0 of every supported module's input and output
(checked by size) and that, in evaluation mode, the model has no other cross-sample
operation — true for every model in :mod:`genefl.models`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from genefl.types import ParamDict

#: Upper bound on the per-sample gradients held at once (bytes); the chunk shrinks to fit.
PER_SAMPLE_BUDGET_BYTES = 1 << 30

#: Module classes with a closed-form per-sample gradient; subclasses count only if they
#: keep the base class's ``forward``.
_FAST_KINDS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv1d, "conv"),
    (nn.Conv2d, "conv"),
    (_BatchNorm, "batchnorm"),
    (nn.GroupNorm, "groupnorm"),
    (nn.LayerNorm, "layernorm"),
)

METHODS = ("exact", "vmap")

#: Target size (bytes) of one block of per-sample gradients, small enough to stay in cache
#: between the matmul that writes it and the square-and-sum that reads it.
_BLOCK_BYTES = 1 << 22


def fisher_diagonal(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 128,
    *,
    method: str = "exact",
) -> ParamDict:
    """Exact empirical Fisher diagonal of every trainable parameter.

    Args:
        model: the network; the train/eval mode of every module is restored afterwards,
            parameters, buffers and ``.grad`` are left untouched.
        inputs: ``(n, ...)`` model inputs on the model's device (images: ``(n, C, H, W)``
            float).
        labels: ``(n,)`` int64 class indices.
        chunk_size: samples per forward/backward chunk (memory vs. speed). Per-sample
            intermediates are further split to fit :data:`PER_SAMPLE_BUDGET_BYTES`; on the
            ``"vmap"`` path the chunk itself shrinks to fit (ResNet-18: about 22 samples
            per GiB).
        method: ``"exact"`` (per-layer closed forms, vmap for the rest) or ``"vmap"``
            (per-sample gradients of the whole model by ``torch.func``; the reference).
            Both are exact; they differ only in cost and rounding.

    Returns:
        ``{param_name: tensor}`` for each parameter with ``requires_grad``, in
        ``named_parameters`` order, of the parameter's shape and dtype: the mean over
        the ``n`` samples of squared per-sample gradients.

    """
    if method not in METHODS:
        raise ValueError(f"unknown Fisher method {method!r}; known: {', '.join(METHODS)}")
    if inputs.shape[0] == 0:
        raise ValueError("fisher_diagonal needs at least one sample")
    if labels.shape[0] != inputs.shape[0]:
        raise ValueError(f"{inputs.shape[0]} inputs but {labels.shape[0]} labels")
    chunk_size = max(1, int(chunk_size))
    was_training = model.training
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        if not params:
            return {}
        totals: dict[str, torch.Tensor] = {}
        if method == "exact" and _samples_independent(model):
            totals = _fast_sums(model, inputs, labels, chunk_size, params)
        rest = [k for k in params if k not in totals]
        if rest:
            totals.update(_vmap_sums(model, inputs, labels, chunk_size, rest))
        n = float(inputs.shape[0])
        return {k: totals[k] / n for k in params}
    finally:
        model.train(was_training)
        for module, training in modes:
            module.training = training


# ------------------------------------------------------------------ per-layer closed forms


def _add_sum_sq_matmul(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``out += sum_n (a_n @ b_n^T)^2`` (elementwise square) for ``a: (n, ..., m, K)``,
    ``b: (n, ..., c, K)`` and ``out: (..., m, c)``.

    The per-sample products ``(n, ..., m, c)`` are formed in column blocks of about
    :data:`_BLOCK_BYTES`, which is much faster than one large product when ``K`` is small.
    """
    block = max(1, _BLOCK_BYTES // max(a[..., 0].numel() * a.element_size(), 1))
    for c in range(0, b.shape[-2], block):
        per = torch.matmul(a, b[..., c : c + block, :].transpose(-1, -2))
        out[..., c : c + block] += per.square_().sum(0)


def _linear_sq(
    x: torch.Tensor, g: torch.Tensor, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over samples of squared per-sample Linear gradients.

    ``x: (n, ..., in)`` module input, ``g: (n, ..., out)`` output gradient; returns
    ``(weight (out, in), bias (out,))``. With extra dims ``...`` the per-sample gradient
    ``sum_t g_nt x_nt^T`` is formed by a batched matmul, in sub-chunks of ``budget`` bytes.
    """
    n, d_in, d_out = x.shape[0], x.shape[-1], g.shape[-1]
    if x.dim() == 2:
        g2 = g.square()
        return g2.T @ x.square(), g2.sum(0)
    x3, g3 = x.reshape(n, -1, d_in), g.reshape(n, -1, d_out)
    step = max(1, budget // (d_out * d_in * x.element_size()))
    weight = x.new_zeros(d_out, d_in)
    for s in range(0, n, step):  # per sample (out, T) @ (T, in)
        _add_sum_sq_matmul(
            weight, g3[s : s + step].transpose(1, 2), x3[s : s + step].transpose(1, 2)
        )
    return weight, g3.sum(1).square().sum(0)


def _conv_sq(
    x: torch.Tensor, g: torch.Tensor, conv: nn.Conv1d | nn.Conv2d, budget: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over samples of squared per-sample Conv1d/Conv2d gradients.

    ``x: (n, C_in, *spatial_in)`` module input, ``g: (n, C_out, *spatial_out)`` output
    gradient; returns ``(weight (C_out, C_in/groups, *k), bias (C_out,))``. Per sample
    ``dW_n = G_n U_n^T`` with ``U_n = unfold(x_n): (C_in*k, P)`` and ``G_n: (C_out, P)``,
    per group. ``U`` is copied once from a strided view of the padded input (cheaper than
    ``F.unfold``) for sub-chunks of samples whose ``U`` and ``dW`` would fit ``budget``
    bytes; ``dW`` itself is only formed in cache-sized blocks (:func:`_add_sum_sq_matmul`).
    """
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        pad = list(conv._reversed_padding_repeated_twice)
    else:
        pad = [p for p in reversed(conv.padding) for _ in range(2)]
    if any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pad, mode=mode)
    kernel, stride, dilation = conv.kernel_size, conv.stride, conv.dilation
    if x.dim() == 3:  # Conv1d as a 2-D convolution of height 1
        x, g = x.unsqueeze(2), g.unsqueeze(2)
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    n, c_in, groups, c_out = x.shape[0], x.shape[1], conv.groups, g.shape[1]
    cols = c_in // groups * kernel[0] * kernel[1]  # (C_in/groups) * k*k
    positions = g.shape[2] * g.shape[3]
    # windows as a view: (n, C_in, H_out, W_out, k_h, k_w), then (n, C_in, k_h, k_w, P)
    spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    windows = x.unfold(2, spans[0], stride[0]).unfold(3, spans[1], stride[1])
    windows = windows[..., :: dilation[0], :: dilation[1]].permute(0, 1, 4, 5, 2, 3)
    per_sample = max(c_out * cols, c_in * kernel[0] * kernel[1] * positions)
    step = max(1, budget // (per_sample * x.element_size()))
    weight = x.new_zeros(groups, c_out // groups, cols)
    for s in range(0, n, step):
        u = windows[s : s + step].reshape(-1, groups, cols, positions)  # one copy
        gg = g[s : s + step].reshape(u.shape[0], groups, c_out // groups, positions)
        _add_sum_sq_matmul(weight, gg, u)
    bias = g.flatten(2).sum(2).square().sum(0)
    return weight.reshape(conv.weight.shape), bias


def _summed_dims(t: torch.Tensor, param_dims: int) -> tuple[int, ...]:
    """Dims of ``t: (n, ...)`` a per-sample gradient sums over: all but the batch dim and
    the parameter's dims, which are ``1 .. param_dims`` if ``param_dims > 0`` (channels
    first) and the last ``-param_dims`` dims otherwise.
    """
    if param_dims > 0:
        return tuple(range(1 + param_dims, t.dim()))
    return tuple(range(1, t.dim() + param_dims))


def _bias_sq(g: torch.Tensor, param_dims: int) -> torch.Tensor:
    """Sum over samples of squared per-sample bias gradients; ``g: (n, ...)`` output
    gradient, bias dims as in :func:`_summed_dims`.
    """
    dims = _summed_dims(g, param_dims)
    return (g.sum(dims) if dims else g).square().sum(0)


def _norm_sq(
    x_hat: torch.Tensor, g: torch.Tensor, param_dims: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over samples of squared per-sample gradients of an affine ``w * x_hat + b``.

    ``x_hat, g: (n, ...)``; the parameters' dims are given by ``param_dims`` as in
    :func:`_summed_dims` (``1``: channels first, BatchNorm and GroupNorm; ``-k``: the last
    ``k`` dims, LayerNorm). Returns ``(weight, bias)`` in the parameters' shape.
    """
    dims = _summed_dims(x_hat, param_dims)
    dw = g * x_hat
    return (dw.sum(dims) if dims else dw).square().sum(0), _bias_sq(g, param_dims)


def _normalised(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x_hat`` of a normalisation module (evaluation mode) and its ``param_dims``."""
    if isinstance(module, _BatchNorm):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean, var = module.running_mean, module.running_var
        assert mean is not None and var is not None
        return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps), 1
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(x, module.num_groups, None, None, module.eps), 1
    assert isinstance(module, nn.LayerNorm)
    shape = module.normalized_shape
    return F.layer_norm(x, shape, None, None, module.eps), -len(shape)


# ------------------------------------------------------------------ the fast path


@dataclass(eq=False)
class _Tap:
    """One supported module: its trainable parameters and what one chunk recorded."""

    module: nn.Module
    kind: str
    names: dict[str, str]  # "weight"/"bias" -> model-level parameter name
    calls: int = 0
    x: torch.Tensor | None = None
    x_version: int = -1
    node: object = None  # grad_fn of the output, taken before any in-place change
    g: torch.Tensor | None = None
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget the previous chunk's tensors."""
        self.calls, self.x, self.x_version, self.node, self.g = 0, None, -1, None, None

    def forward_hook(self, module: nn.Module, args: tuple, output: object) -> None:
        """Record the input and hook the output gradient (first call of the chunk only)."""
        self.calls += 1
        if self.calls > 1:
            self.x, self.node = None, None
            return
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            self.x = args[0].detach()
            self.x_version = args[0]._version
            if output.requires_grad:
                self.node = output.grad_fn
                output.register_hook(self._grad_hook)

    def _grad_hook(self, grad_out: torch.Tensor) -> None:
        self.g = grad_out.detach()

    def usable(self, n: int) -> bool:
        """True when this chunk's record gives the module's per-sample gradients."""
        x, g = self.x, self.g
        return (
            self.calls == 1 and x is not None and g is not None
            and x._version == self.x_version and x.dim() >= 2 and g.dim() >= 2
            and x.shape[0] == n and g.shape[0] == n
            and (self.kind != "conv" or x.dim() == self.module.weight.dim())
            and (self.kind != "layernorm" or x.dim() > len(self.module.normalized_shape))
        )

    def squares(self, budget: int, weight: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(weight, bias)`` sums over this chunk of squared per-sample gradients; the
        weight's is skipped (``None``) unless ``weight``.
        """
        assert self.x is not None and self.g is not None
        if self.kind == "linear":
            return _linear_sq(self.x, self.g, budget) if weight else (None, _bias_sq(self.g, -1))
        if self.kind == "conv":
            if not weight:
                return None, _bias_sq(self.g, 1)
            return _conv_sq(self.x, self.g, self.module, budget)  # type: ignore[arg-type]
        x_hat, param_dims = _normalised(self.module, self.x)
        return _norm_sq(x_hat, self.g, param_dims)


def _fast_kind(module: nn.Module) -> str | None:
    for base, kind in _FAST_KINDS:
        if isinstance(module, base) and type(module).forward is base.forward:
            return kind
    return None


def _samples_independent(model: nn.Module) -> bool:
    """False if some BatchNorm uses batch statistics in evaluation mode."""
    return not any(
        isinstance(m, _BatchNorm) and (m.running_mean is None or m.running_var is None)
        for m in model.modules()
    )


@dataclass
class _Graph:
    """The autograd graph below a loss: node children and parameter accumulators."""

    children: dict[object, list[object]]
    accumulators: dict[int, object]  # id(param) -> its AccumulateGrad node
    uses: Counter[int]  # id(param) -> number of graph edges into its accumulator


def _graph(root: torch.Tensor) -> _Graph:
    """Walk the autograd graph of ``root`` once (iteratively)."""
    graph = _Graph({}, {}, Counter())
    stack = [root.grad_fn] if root.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node in graph.children:
            continue
        kids = [child for child, _ in node.next_functions if child is not None]
        graph.children[node] = kids
        for child in kids:
            variable = getattr(child, "variable", None)
            if variable is not None:
                graph.uses[id(variable)] += 1
                graph.accumulators[id(variable)] = child
            elif child not in graph.children:
                stack.append(child)
    return graph


def _reaches(graph: _Graph, node: object, targets: set[object]) -> bool:
    """Whether backward from ``node`` leads to one of the ``targets`` accumulators."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current in targets:
            return True
        if current in seen:
            continue
        seen.add(current)
        stack.extend(graph.children.get(current, ()))
    return False


def _backward_targets(
    graph: _Graph, taps: list[_Tap], params: Mapping[str, torch.Tensor]
) -> list[torch.Tensor]:
    """Few, cheap parameters whose gradients make every tapped output's hook fire.

    Every trainable bias of a tap first (its gradient is a mere sum); then, for each
    tapped output from which backward reaches none of them (e.g. a bias-free first
    convolution), that tap's weight. Backward then computes only these gradients and
    the activation gradients leading to them — not the input's gradient, nor the
    weight gradients of convolutions that a later bias already lies beyond.
    """
    chosen: dict[object, torch.Tensor] = {}

    def choose(name: str) -> None:
        node = graph.accumulators.get(id(params[name]))
        if node is not None:
            chosen.setdefault(node, params[name])

    for tap in taps:
        if "bias" in tap.names:
            choose(tap.names["bias"])
    for tap in taps:
        if tap.node is not None and not _reaches(graph, tap.node, set(chosen)):
            choose(tap.names.get("weight", tap.names.get("bias", "")))
    return list(chosen.values())


def _make_taps(model: nn.Module, params: Mapping[str, torch.Tensor]) -> list[_Tap]:
    """One tap per supported module owning at least one of ``params``."""
    name_of = {id(p): k for k, p in params.items()}
    taps = []
    for module in model.modules():
        kind = _fast_kind(module)
        if kind is None:
            continue
        names = {}
        for attr in ("weight", "bias"):
            p = module._parameters.get(attr)
            if p is not None and id(p) in name_of:
                names[attr] = name_of[id(p)]
        if names:
            taps.append(_Tap(module, kind, names))
    return taps


def _fast_sums(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int,
    params: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``{name: sum_n grad_n^2}`` for the parameters the closed forms cover exactly."""
    taps = _make_taps(model, params)
    if not taps:
        return {}
    failed: set[str] = set()
    budget = PER_SAMPLE_BUDGET_BYTES
    handles = [t.module.register_forward_hook(t.forward_hook, prepend=True) for t in taps]
    try:
        for start in range(0, inputs.shape[0], chunk_size):
            x = inputs[start : start + chunk_size]
            y = labels[start : start + chunk_size]
            n = x.shape[0]
            for tap in taps:
                tap.reset()
            with torch.enable_grad():
                loss = F.cross_entropy(model(x), y, reduction="sum")
                graph = _graph(loss)
                wrt = _backward_targets(graph, taps, params)
                if wrt:
                    torch.autograd.grad(loss, wrt)
            uses = graph.uses
            del loss, graph, wrt
            for tap in taps:
                live = [a for a, k in tap.names.items() if k not in failed]
                if not live:
                    continue
                if not tap.usable(n):
                    failed.update(tap.names.values())
                    continue
                live = [a for a in live if uses[id(params[tap.names[a]])] == 1]
                failed.update(k for a, k in tap.names.items() if a not in live)
                if not live:
                    continue
                weight, bias = tap.squares(budget, "weight" in live)
                for attr in live:
                    value = weight if attr == "weight" else bias
                    assert value is not None
                    if attr in tap.sums:
                        tap.sums[attr] += value
                    else:
                        tap.sums[attr] = value
            for tap in taps:
                tap.reset()
    finally:
        for handle in handles:
            handle.remove()
        for tap in taps:
            tap.reset()
    return {
        k: tap.sums[a].reshape(params[k].shape)
        for tap in taps for a, k in tap.names.items() if k not in failed
    }


# ------------------------------------------------------------------ the vmap reference


def _vmap_sums(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int,
    names: list[str],
) -> dict[str, torch.Tensor]:
    """``{name: sum_n grad_n^2}`` for ``names`` by ``vmap(grad)`` of one-sample losses."""
    all_params = dict(model.named_parameters())
    wrt = {k: all_params[k].detach() for k in names}
    fixed = {k: p.detach() for k, p in all_params.items() if k not in wrt}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def sample_loss(p: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        logits = functional_call(model, (p, fixed, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    nbytes = sum(p.numel() * p.element_size() for p in wrt.values())
    chunk_size = max(1, min(chunk_size, PER_SAMPLE_BUDGET_BYTES // max(nbytes, 1)))
    total = {k: torch.zeros_like(p) for k, p in wrt.items()}
    for start in range(0, inputs.shape[0], chunk_size):
        grads = per_sample_grads(
            wrt, inputs[start : start + chunk_size], labels[start : start + chunk_size]
        )
        for k, g in grads.items():
            total[k] += g.pow(2).sum(dim=0)
    return total


# ------------------------------------------------------------------ normalisation and mask


def minmax_normalise(fisher: Mapping[str, torch.Tensor]) -> ParamDict:
    """Min-max normalise over *all* entries of all tensors to ``[0, 1]`` (``F_hat``).

    A constant Fisher (max == min) normalises to zeros.
    """
    lo = min(float(t.min()) for t in fisher.values())
    hi = max(float(t.max()) for t in fisher.values())
    span = hi - lo
    if span <= 0.0:
        return {k: torch.zeros_like(t) for k, t in fisher.items()}
    return {k: (t - lo) / span for k, t in fisher.items()}


def minmax_normalise_per_layer(
    fisher: Mapping[str, torch.Tensor], layer_groups: Sequence[Sequence[str]]
) -> ParamDict:
    """Min-max normalise each layer's entries (the tensors of one group together) to
    ``[0, 1]`` separately; tensors in no group are normalised on their own.

    The per-layer alternative to Eq. 6's whole-model normalisation: every layer then has
    entries near 1, so the Fisher mask covers every layer instead of the few entries of
    the layer with the largest Fisher.
    """
    out: ParamDict = {}
    grouped = {n for names in layer_groups for n in names}
    groups = [[n for n in names if n in fisher] for names in layer_groups]
    groups += [[n] for n in fisher if n not in grouped]
    for names in groups:
        if names:
            out.update(minmax_normalise({n: fisher[n] for n in names}))
    return out


def fisher_mask(fisher_hat: Mapping[str, torch.Tensor], epsilon: float) -> ParamDict:
    """``M = 1[F_hat > epsilon]`` as float tensors (1 = constrained to the cluster)."""
    return {k: (t > epsilon).to(t.dtype) for k, t in fisher_hat.items()}
