"""Weighting and reduction inside the kernels, and the chain rule through them.

Why: the sum runs in the same compiled loop as the loss and its gradient, so the logits are
read once (timed by ``tools/benchmark_losses.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .targets import broadcast_left

__all__ = ['reduce_weighted', 'chain_factor', 'chain_gradient', 'scaled']


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


def scaled(loss: Tensor, scale: Tensor, reduction: str) -> Tensor:
    """A reduced loss times ``scale`` (the normalizer's reciprocal); an unreduced, full-size
    loss has no normalizer and is returned as it is rather than multiplied by one."""
    return loss if reduction == 'none' else loss * scale


def chain_gradient(grad: Tensor, weight: Tensor | None, grad_out: Tensor, reduction: str,
                   num_losses: int, dtype: torch.dtype) -> Tensor:
    """Chain the per-element ``grad`` with ``weight`` and the reduction's ``grad_out``;
    ``num_losses`` is the element count a 'mean' divides by, ``dtype`` the logits' dtype."""
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
