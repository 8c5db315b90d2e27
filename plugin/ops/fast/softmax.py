"""Fused kernels of the softmax focal loss; the readable formula is
:func:`plugin.ops.focal.softmax_focal_loss`.

Why: per row, the logsumexp and log p_y are taken once without gradient (in one sweep over
each row on CPU: shifted by the label's logit, no row maximum first), then value and
gradient in one pass (timed by ``tools/benchmark_losses.py``; the SSD ranking pass by
``tools/benchmark_mining.py``).

Parameters (keyword-only): ``lse`` (N,) and ``log_p_y`` ((N,) or None for dense targets) from
:func:`softmax_row_terms`, ``alpha`` ((C + 1,) tensor or None), ``gamma``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .compile import CompiledKernel, compile_enabled
from .sigmoid import power
from .reduction import chain_gradient, reduce_weighted, scaled
from .targets import dense_targets, upcast

__all__ = ['softmax_row_terms', 'softmax_focal_value', 'softmax_focal_grad']


def _logsumexp(logits: Tensor) -> Tensor:
    return torch.logsumexp(upcast(logits), dim=-1)


def _label_terms(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    x = upcast(logits)
    lse = torch.logsumexp(x, dim=-1)
    return lse, x.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse


def _label_terms_shifted(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """With s = sum_c exp(x_c - x_y): lse = x_y + log s and log p_y = -log s, in one sweep
    over each row (no max); the last output says whether some s overflowed."""
    x = upcast(logits)
    x_y = x.gather(-1, labels.unsqueeze(-1))
    shifted_sum = torch.exp(x - x_y).sum(-1)
    log_sum = torch.log(shifted_sum)
    return x_y.squeeze(-1) + log_sum, -log_sum, (shifted_sum == float('inf')).any()


_LOGSUMEXP = CompiledKernel(_logsumexp)
_LABEL_TERMS = CompiledKernel(_label_terms)
_LABEL_TERMS_SHIFTED = CompiledKernel(_label_terms_shifted)


def softmax_row_terms(logits: Tensor, labels: Tensor | None = None
                      ) -> tuple[Tensor, Tensor | None]:
    """Per row, without gradient: logsumexp (N,) over the classes and, with class indices
    (N,), log p_y (N,), else None; in :func:`~plugin.ops.fast.targets.compute_dtype`.

    On CPU the compiled loop shifts by the label's logit (one sweep; a maximum would take a
    second); rows whose shifted sum overflows are recomputed with the maximum. A GPU kernel
    holds the row in registers and eager mode gains nothing: both use the maximum.
    """
    with torch.no_grad():
        if labels is None:
            return _LOGSUMEXP(logits), None
        if logits.device.type != 'cpu' or not compile_enabled():
            return _LABEL_TERMS(logits, labels)
        lse, log_p_y, overflowed = _LABEL_TERMS_SHIFTED(logits, labels)
        if bool(overflowed):
            rows = (log_p_y == float('-inf')).nonzero().squeeze(1)
            lse[rows], log_p_y[rows] = _label_terms(logits[rows], labels[rows])
        return lse, log_p_y


def softmax_focal_value(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor,
                        *, reduction: str, lse: Tensor, log_p_y: Tensor | None,
                        alpha: Tensor | None, gamma: float) -> Tensor:
    if log_p_y is not None:  # class-index targets: one term per row, read from log p_y
        alpha_y = 1.0 if alpha is None else alpha[targets]
        loss = -alpha_y * power(-torch.expm1(log_p_y), gamma) * log_p_y
        return scaled(reduce_weighted(loss, weight, reduction), scale, reduction)
    x = upcast(logits)
    t = dense_targets(targets, x)
    log_p = x - lse.unsqueeze(-1)
    loss = -t * power(-torch.expm1(log_p), gamma) * log_p
    if alpha is not None:
        loss = loss * alpha
    return scaled(reduce_weighted(loss.sum(-1), weight, reduction), scale, reduction)


def softmax_focal_grad(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor,
                       *, reduction: str, lse: Tensor, log_p_y: Tensor | None,
                       alpha: Tensor | None, gamma: float) -> Tensor:
    """d/dz of a loss on class c is g_c (onehot_c - p): summed over c with weights t_c, where
    g_c = alpha_c (gamma (1 - p_c)^(gamma - 1) p_c log p_c - (1 - p_c)^gamma)."""
    x = upcast(logits)
    log_p = x - lse.unsqueeze(-1)
    t = dense_targets(targets, x)
    if log_p_y is not None:
        alpha_y = 1.0 if alpha is None else alpha[targets]
        g_y = _focal_factor(log_p_y, -torch.expm1(log_p_y), gamma) * alpha_y
        grad = g_y.unsqueeze(-1) * (t - torch.exp(log_p))
    else:
        per_class = t * _focal_factor(log_p, -torch.expm1(log_p), gamma)
        if alpha is not None:
            per_class = per_class * alpha
        grad = per_class - per_class.sum(-1, keepdim=True) * torch.exp(log_p)
    return chain_gradient(grad, weight, scale, reduction, x[..., 0].numel(), logits.dtype)


def _focal_factor(log_p: Tensor, one_minus_p: Tensor, gamma: float) -> Tensor:
    if gamma == 0:
        return -torch.ones_like(log_p)
    pow_m1 = power(one_minus_p, gamma - 1)
    if gamma < 1:  # infinite at p = 1, where its factor log p is 0
        pow_m1 = torch.where(one_minus_p > 0, pow_m1, 0.0)
    return gamma * pow_m1 * torch.exp(log_p) * log_p - pow_m1 * one_minus_p
