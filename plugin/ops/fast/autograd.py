"""A loss as compiled (value, gradient) kernels behind one autograd Function.

Why: autograd would keep a chain of full-size intermediates for the backward pass; here the
forward keeps the logits and targets only (peak memory: ``tools/benchmark_losses.py``). On CPU
(compute-bound) the forward computes the value and the analytic gradient in one pass and the
backward at most scales that gradient in place; on a GPU (memory-bound) the forward computes
the value and the backward the gradient.

Every kernel has one signature: ``kernel(logits, targets, weight, scale, *, reduction,
**params)``, where ``scale`` multiplies the result (the normalizer's reciprocal, times the
incoming gradient for a gradient) and ``params`` are the loss's keyword parameters.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .compile import CompiledKernel
from .targets import broadcast_left, compute_dtype

__all__ = ['FusedLoss', 'caches_gradient']

Statistics = Callable[[Tensor, Tensor], Any]


class FusedLoss:
    """A loss from its ``value`` and ``grad`` kernels, compiled as value, gradient, and both
    in one pass. Calling it evaluates the loss with the analytic gradient as its backward.

    An optional ``statistics(grad, targets)`` summarizes the final gradient (EFL's per-class
    totals) and is handed to the call's ``on_backward``; its compiled part may leave a step
    to ``summarize(parts, targets)``, run eagerly (scattering rows into a few bins, which
    compiled loops do with contended atomic adds).
    """

    def __init__(self, value: Callable[..., Tensor], grad: Callable[..., Tensor], *,
                 statistics: Statistics | None = None,
                 summarize: Callable[[Any, Tensor], Tensor] | None = None, name: str) -> None:
        def value_and_grad(logits: Tensor, targets: Tensor, weight: Tensor | None,
                           scale: Tensor, *, reduction: str, **params: Any) -> tuple:
            loss = value(logits, targets, weight, scale, reduction=reduction, **params)
            grad_ = grad(logits, targets, weight, scale, reduction=reduction, **params)
            if statistics is None:
                return loss, grad_
            return loss, grad_, statistics(grad_, targets)

        self.name = name
        self.value = CompiledKernel(value, name=f'{name}.value')
        self.grad = CompiledKernel(grad, name=f'{name}.grad')
        self.value_and_grad = CompiledKernel(value_and_grad, name=f'{name}.value_and_grad')
        self.statistics = (None if statistics is None
                           else CompiledKernel(statistics, name=f'{name}.statistics'))
        self._summarize = summarize

    def summarized(self, parts: Any, targets: Tensor) -> Tensor:
        return parts if self._summarize is None else self._summarize(parts, targets)

    def __call__(self, logits: Tensor, targets: Tensor, *, reduction: str,
                 weight: Tensor | None = None, normalizer: float | Tensor | None = None,
                 on_backward: Callable[[Tensor], None] | None = None, **params: Any) -> Tensor:
        """The loss; ``normalizer`` (already checked) divides a 'sum' inside the fused pass,
        so that a backward whose incoming gradient is exactly one has nothing to scale."""
        scale = _reciprocal(normalizer, logits)
        if not logits.requires_grad:
            return self.value(logits, targets, weight, scale, reduction=reduction, **params)
        return _AnalyticGradient.apply(self, logits, targets, weight, scale, reduction, params,
                                       on_backward)


def caches_gradient(logits: Tensor) -> bool:
    """Whether the forward pass computes the gradient along with the loss: CPU loops are
    compute-bound (one pass saves a second exp and log); GPU kernels are memory-bound (a
    value-only forward and one gradient pass move a third less memory)."""
    return logits.device.type != 'cuda'


class _AnalyticGradient(torch.autograd.Function):
    """Keeps the logits and targets, never a chain of intermediates. The first backward
    scales the gradient cached by the forward in place (a scalar for a reduced loss; for
    'none', one value per loss element); otherwise the gradient kernel runs."""

    @staticmethod
    def forward(ctx: Any, loss: FusedLoss, logits: Tensor, targets: Tensor,
                weight: Tensor | None, scale: Tensor, reduction: str, params: dict,
                on_backward: Callable[[Tensor], None] | None) -> Tensor:
        ctx.loss, ctx.reduction, ctx.params = loss, reduction, params
        ctx.on_backward = on_backward if loss.statistics is not None else None
        ctx.save_for_backward(logits, targets, weight, scale)
        ctx.cached_grad = ctx.cached_statistics = None
        if not caches_gradient(logits):
            return loss.value(logits, targets, weight, scale, reduction=reduction, **params)
        value, ctx.cached_grad, *statistics = loss.value_and_grad(
            logits, targets, weight, scale, reduction=reduction, **params)
        if statistics and reduction != 'none':  # they scale with |grad_out| if it is a scalar
            ctx.cached_statistics = loss.summarized(statistics[0], targets)
        return value

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
            grad = ctx.loss.grad(logits, targets, weight, grad_out * scale,
                                 reduction=ctx.reduction, **ctx.params)
        if ctx.on_backward is not None:
            if statistics is None:
                statistics = ctx.loss.summarized(ctx.loss.statistics(grad, targets), targets)
            ctx.on_backward(statistics)
        return None, grad, None, None, None, None, None, None


def _is_one(grad_out: Tensor) -> bool:
    """An incoming gradient of exactly 1 (a loss summed into the total); looked at on CPU
    only, where reading it costs no device synchronization."""
    return grad_out.device.type == 'cpu' and grad_out.numel() == 1 and grad_out.item() == 1.0


def _reciprocal(normalizer: float | Tensor | None, logits: Tensor) -> Tensor:
    dtype = compute_dtype(logits)
    if normalizer is None:
        return torch.ones((), dtype=dtype, device=logits.device)
    if isinstance(normalizer, Tensor):
        return normalizer.detach().to(logits.device, dtype).reshape(()).reciprocal()
    return torch.full((), 1.0 / normalizer, dtype=dtype, device=logits.device)
