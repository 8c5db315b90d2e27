"""Fused loss kernels: an autograd Function over a pure (value, gradient) pair.

A dense head's classification loss runs over ~100k anchors x 80 classes. Autograd would keep a
chain of full-size intermediates for the backward pass. Here the forward keeps the logits and
targets only. On CPU (compute-bound) the forward computes the value and the analytic gradient
in one pass over the logits and the backward at most scales that gradient in place; on a GPU
(memory-bound) the forward computes the value and the backward the gradient, one pass each
(:func:`caches_gradient`). The kernels are compiled with ``torch.compile`` into fused loops:
the class count is a constant, anchor counts stay symbolic so that they can change between
batches without recompiling. Where no compiler works, the first failure is reported once with
a warning and the same functions run eagerly.

Set ``PLUGIN_COMPILE=0`` in the environment to always run eagerly.
"""
from __future__ import annotations

import os
import time
import types
import warnings
from typing import Any
from collections.abc import Callable

import torch
from torch import Tensor

REDUCTIONS = ('none', 'mean', 'sum')

__all__ = ['FusedKernel', 'LossKernels', 'fused_loss', 'caches_gradient', 'dense_targets',
           'class_mask', 'reduce_weighted', 'check_reduction', 'chain_gradient', 'chain_factor',
           'label_columns', 'at_columns', 'broadcast_left', 'upcast',
           'compute_dtype', 'compile_enabled', 'first_compile_seconds']

_compile_failed = False
_first_compile_seconds: dict[str, float] = {}


def compile_enabled() -> bool:
    """Whether fused kernels will be compiled (``PLUGIN_COMPILE`` unset or not ``0``)."""
    return not _compile_failed and os.environ.get('PLUGIN_COMPILE', '1') != '0'


def first_compile_seconds() -> dict[str, float]:
    """Seconds each kernel spent on its first (compiling) call in this process."""
    return dict(_first_compile_seconds)


class FusedKernel:
    """A pure tensor function, compiled on first use where a compiler is available.

    Each input signature (dtypes, ranks, and the values of non-tensor arguments) gets a
    compiled copy of its own: dynamo keeps compiled variants, and its recompile limit, per
    code object, so one shared copy would let dtypes, target kinds and losses evict each other
    into eager mode. Within a signature the anchor count stays dynamic; ``class_dim_static``
    (default) makes the last dimension of the first argument a constant.
    """

    def __init__(self, fn: Callable[..., Tensor], class_dim_static: bool = True) -> None:
        self.fn = fn
        self.name = fn.__name__
        self._static_dims = 1 if class_dim_static else 0
        self._compiled: dict[tuple, Callable[..., Tensor]] = {}

    def __call__(self, logits: Tensor, *args: Any) -> Tensor:
        global _compile_failed
        use_compiled = (compile_enabled() and logits.numel() > 0
                        and logits.device.type in ('cpu', 'cuda')
                        and not torch.compiler.is_compiling())
        if not use_compiled:
            return self.fn(logits, *args)
        signature = _signature(logits, args, self._static_dims)
        compiled = self._compiled.get(signature)
        if compiled is None:
            compiled = torch.compile(_own_code(self.fn))
            self._compiled[signature] = compiled
        _mark_anchor_dims_dynamic(logits, args, self._static_dims)
        start = time.perf_counter()
        try:
            out = compiled(logits, *args)
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            out = self.fn(logits, *args)  # a genuine input error raises here, uncaught
            _compile_failed = True
            warnings.warn(f'plugin: torch.compile is unavailable here ({type(err).__name__}: '
                          f'{str(err).splitlines()[0][:200]}); fused losses run eagerly.',
                          RuntimeWarning, stacklevel=2)
            return out
        _first_compile_seconds.setdefault(self.name, time.perf_counter() - start)
        return out


def _signature(logits: Tensor, args: tuple, static_dims: int) -> tuple:
    kinds = tuple((a.dtype, a.dim()) if isinstance(a, Tensor) else a for a in args)
    return (logits.device.type, logits.dtype, logits.dim(),
            logits.shape[logits.dim() - static_dims:], kinds)


def _mark_anchor_dims_dynamic(logits: Tensor, args: tuple, static_dims: int) -> None:
    """Anchor dimensions (all but the last ``static_dims`` of ``logits``, the class one)
    stay symbolic.

    A constant class count lets the compiler unroll and fuse the per-row loops (a softmax's
    max, sum and gradient in one sweep over a row); anchor counts change every batch.
    """
    leading = logits.shape[:logits.dim() - static_dims]
    for tensor in (logits, *args):
        if isinstance(tensor, Tensor):
            for dim in range(min(tensor.dim(), len(leading))):
                if tensor.shape[dim] == leading[dim]:
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` (closure included) with a code object of its own."""
    code = fn.__code__.replace()
    copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__annotations__ = fn.__annotations__
    return copy


class LossKernels:
    """A loss as pure functions, compiled as value, gradient, and both in one pass.

    ``value(logits, targets, weight, reduction, *params)`` returns the loss and
    ``grad(logits, targets, weight, grad_out, reduction, *params)`` its gradient w.r.t. the
    logits; ``params`` holds floats or small tensors. The one-pass
    ``value_and_grad(logits, targets, weight, reduction, scale, *params)`` returns both, times
    a 0-dim ``scale``. An optional ``statistics(grad, targets)`` summarizes the gradient (EFL's
    per-class totals); in the one-pass kernel it is computed from that scaled gradient, and
    it is linear in ``|grad_out|``. Its compiled part may leave a step to ``summarize(parts,
    targets)``, which runs eagerly: scattering per-row values into a few bins, for one, which
    compiled loops do with contended atomic adds.
    """

    def __init__(self, value: Callable[..., Tensor], grad: Callable[..., Tensor],
                 statistics: Callable[[Tensor, Tensor], Any] | None = None,
                 summarize: Callable[[Any, Tensor], Tensor] | None = None) -> None:
        def value_and_grad(logits: Tensor, targets: Tensor, weight: Tensor | None,
                           reduction: str, scale: Tensor, *params: Any) -> tuple[Tensor, ...]:
            loss = value(logits, targets, weight, reduction, *params) * scale
            grad_ = grad(logits, targets, weight, scale, reduction, *params)
            if statistics is None:
                return loss, grad_
            return loss, grad_, statistics(grad_, targets)

        value_and_grad.__name__ = f'{value.__name__}_and_grad'
        self.value, self.grad = FusedKernel(value), FusedKernel(grad)
        self.value_and_grad = FusedKernel(value_and_grad)
        self.has_statistics = statistics is not None
        self._statistics = None if statistics is None else FusedKernel(statistics)
        self._summarize = summarize

    def summarized(self, parts: Any, targets: Tensor) -> Tensor:
        """The statistics from what the compiled ``statistics`` returned."""
        return parts if self._summarize is None else self._summarize(parts, targets)

    def statistics(self, grad: Tensor, targets: Tensor) -> Tensor:
        return self.summarized(self._statistics(grad, targets), targets)


def caches_gradient(logits: Tensor) -> bool:
    """Whether the forward pass computes the gradient along with the loss.

    CPU loops are compute-bound: one pass for both saves the exp and log of a second pass,
    and the backward only scales the cached gradient. GPU kernels are memory-bound: a
    value-only forward and one gradient pass in backward move a third less memory than a
    cached gradient scaled in place, and hold no gradient between the two passes.
    """
    return logits.device.type != 'cuda'


class _FusedLossFunction(torch.autograd.Function):
    """Keeps the logits and targets, never a chain of intermediates.

    Where :func:`caches_gradient`, the forward computes the loss and its gradient in the
    same pass over the logits, and the first backward scales that buffer in place by the
    incoming gradient (a scalar for a reduced loss; for 'none', one value per loss element,
    broadcast over the classes of a per-row loss). Otherwise, and for a second backward
    (``retain_graph``), the backward computes the gradient from the logits. With
    ``on_backward``, the kernels' statistics of the final gradient are handed to it.
    """

    @staticmethod
    def forward(ctx: Any, kernels: LossKernels, logits: Tensor, targets: Tensor,
                weight: Tensor | None, reduction: str, scale: Tensor, params: tuple,
                on_backward: Callable[[Tensor], None] | None) -> Tensor:
        ctx.kernels, ctx.reduction, ctx.params = kernels, reduction, params
        ctx.on_backward = on_backward if kernels.has_statistics else None
        ctx.save_for_backward(logits, targets, weight, scale)
        if not caches_gradient(logits):
            ctx.cached_grad = ctx.cached_statistics = None
            return _normalized(kernels.value(logits, targets, weight, reduction, *params),
                               scale, reduction)
        loss, ctx.cached_grad, *statistics = kernels.value_and_grad(logits, targets, weight,
                                                                  reduction, scale, *params)
        # Statistics scale with |grad_out| only when grad_out is one scalar.
        ctx.cached_statistics = (kernels.summarized(statistics[0], targets)
                                 if statistics and reduction != 'none' else None)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple:
        grad, ctx.cached_grad = ctx.cached_grad, None
        statistics, ctx.cached_statistics = ctx.cached_statistics, None
        logits, targets, weight, scale = ctx.saved_tensors
        if grad is not None:
            if not _is_one(grad_out):
                grad.mul_(broadcast_left(grad_out, grad))
                if statistics is not None:
                    statistics = statistics * grad_out.abs().to(statistics.dtype)
        else:
            grad = ctx.kernels.grad(logits, targets, weight, grad_out * scale, ctx.reduction,
                                    *ctx.params)
        if ctx.on_backward is not None:
            if statistics is None:
                statistics = ctx.kernels.statistics(grad, targets)
            ctx.on_backward(statistics)
        return None, grad, None, None, None, None, None, None


def _is_one(grad_out: Tensor) -> bool:
    """An incoming gradient of exactly 1 (a loss summed into the total); looked at on CPU
    only, where reading it costs no device synchronization."""
    return grad_out.device.type == 'cpu' and grad_out.numel() == 1 and grad_out.item() == 1.0


def fused_loss(kernels: LossKernels, logits: Tensor, targets: Tensor, weight: Tensor | None,
               reduction: str, params: tuple,
               on_backward: Callable[[Tensor], None] | None = None,
               normalizer: float | Tensor | None = None) -> Tensor:
    """Evaluate ``kernels`` on the logits, with their analytic gradient as the backward.

    ``normalizer`` divides a 'sum' inside the fused pass (detection's number of positives),
    so that the gradient leaves the forward pass final: a backward whose incoming gradient
    is exactly one then has nothing left to scale.
    """
    scale = _reciprocal(normalizer, reduction, logits)
    if not logits.requires_grad:
        return _normalized(kernels.value(logits, targets, weight, reduction, *params), scale,
                           reduction)
    return _FusedLossFunction.apply(kernels, logits, targets, weight, reduction, scale, params,
                                    on_backward)


def _normalized(loss: Tensor, scale: Tensor, reduction: str) -> Tensor:
    """The loss times ``scale``. Only a sum has a normalizer: an unreduced, full-size loss is
    returned as it is rather than multiplied by one."""
    return loss if reduction == 'none' else loss * scale


def _reciprocal(normalizer: float | Tensor | None, reduction: str, logits: Tensor) -> Tensor:
    dtype = compute_dtype(logits)
    if normalizer is None:
        return torch.ones((), dtype=dtype, device=logits.device)
    if reduction != 'sum':
        raise ValueError(f"normalizer divides a sum: it needs reduction='sum', got "
                         f'reduction={reduction!r}')
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f'normalizer must be a number or a one-element tensor, got '
                             f'shape {tuple(normalizer.shape)}')
        return normalizer.detach().to(logits.device, dtype).reshape(()).reciprocal()
    if not normalizer > 0:
        raise ValueError(f'normalizer must be > 0, got {normalizer}')
    return torch.full((), 1.0 / normalizer, dtype=dtype, device=logits.device)


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction={reduction!r} is not supported; allowed: {REDUCTIONS}')
    return reduction


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float16/bfloat16 logits are computed in float32; float32/float64 stay as they are."""
    return logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32


def upcast(logits: Tensor) -> Tensor:
    """The logits in :func:`compute_dtype` (inside a compiled kernel, a per-element cast)."""
    return logits.to(compute_dtype(logits))


def dense_targets(targets: Tensor, logits: Tensor) -> Tensor:
    """Float targets shaped like ``logits`` (N, C).

    Integer ``targets`` (N,) are class indices; index C (or any value outside [0, C)) is a
    row of zeros, i.e. background for sigmoid classifiers. The one-hot never materializes in
    a compiled kernel: it is an index comparison fused into the loss loop.
    """
    if targets.dtype.is_floating_point:
        return targets.to(logits.dtype)
    return class_mask(targets, logits).to(logits.dtype)


def class_mask(labels: Tensor, logits: Tensor) -> Tensor:
    """Bool (N, C): entry (i, c) is labels[i] == c; class indices (N,) as in
    :func:`dense_targets`."""
    classes = torch.arange(logits.shape[-1], device=logits.device, dtype=labels.dtype)
    return labels.unsqueeze(-1) == classes


def reduce_weighted(loss: Tensor, weight: Tensor | None, reduction: str) -> Tensor:
    """Multiply by ``weight`` (broadcast from the left) and reduce."""
    if reduction == 'none':
        return loss if weight is None else loss * broadcast_left(weight, loss)
    # A compiled value-and-gradient pass reads the logits once only if the sum runs over the
    # gradient's loop: a per-row weight makes that a (rows, classes) loop, so rows are summed
    # first, then weighted; without a weight the gradient loop is flat, and so is the sum.
    if weight is not None and weight.dim() < loss.dim():
        total = (loss.sum(-1) * broadcast_left(weight, loss[..., 0])).sum()
    else:
        total = (loss if weight is None else loss * weight).sum()
    return total / max(loss.numel(), 1) if reduction == 'mean' else total


def chain_gradient(grad: Tensor, weight: Tensor | None, grad_out: Tensor, reduction: str,
                   num_losses: int, dtype: torch.dtype) -> Tensor:
    """Chain the per-element ``grad`` with ``weight`` and the reduction's ``grad_out``.

    ``num_losses`` is the element count a 'mean' divides by; ``dtype`` the logits' dtype.
    """
    return (grad * chain_factor(weight, grad_out, reduction, num_losses, grad)).to(dtype)


def chain_factor(weight: Tensor | None, grad_out: Tensor, reduction: str, num_losses: int,
                 like: Tensor) -> Tensor:
    """What a per-element gradient shaped like ``like`` is multiplied by: the reduction's
    ``grad_out`` (divided by ``num_losses`` for 'mean') times ``weight``, each broadcast from
    the left; it has ``like``'s number of dimensions, each of size 1 or ``like``'s."""
    if reduction == 'none':
        factor = broadcast_left(grad_out, like)
    else:
        scale = grad_out.to(like.dtype)
        factor = (scale / max(num_losses, 1) if reduction == 'mean' else scale).reshape(
            (1,) * like.dim())
    if weight is not None:
        factor = factor * broadcast_left(weight, like)
    return factor


def label_columns(labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """For class-index labels (N,) (any value outside [0, C) is background): each row's label
    column, clamped into [0, C) so that it can be gathered, and whether the row has one."""
    return labels.clamp(0, num_classes - 1), (labels >= 0) & (labels < num_classes)


def at_columns(values: Tensor, columns: Tensor) -> Tensor:
    """Entries (N,) of ``values`` (N, C) at ``columns`` (N,); dimensions of size 1 broadcast."""
    if values.shape[-1] == 1:  # one value for every column
        return values[..., 0].expand(columns.shape)
    rows = values.expand(columns.shape[0], -1)
    return rows.gather(-1, columns.unsqueeze(-1)).squeeze(-1)


def broadcast_left(weight: Tensor, like: Tensor) -> Tensor:
    """View a (N,) or (N, C) weight so that it broadcasts over ``like`` from the left."""
    return weight.reshape(weight.shape + (1,) * (like.dim() - weight.dim())).to(like.dtype)
