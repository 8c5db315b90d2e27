"""Fused kernels of the sigmoid family: focal loss, Poly-1 and EFL in one value/gradient pair.

The readable formulas are in :mod:`plugin.ops.focal`; these kernels must equal them. Why:
the loss and its analytic gradient in one compiled pass (timed by
``tools/benchmark_losses.py``). With class-index ("indexed") targets every entry is first
treated as a negative (no per-entry target test, no selects), then one entry per row is
replaced by its positive value.

Parameters (keyword-only): ``alpha`` (float, (C,) tensor or None), ``gamma`` (float or (C,)),
``epsilon`` (Poly-1's coefficient, 0 for none), ``class_weight`` ((C,) or None: EFL's
gamma_j / gamma_b), ``label_smoothing``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .log1p import log1p_unit
from .reduction import chain_factor, chain_gradient, reduce_weighted, scaled
from .targets import (alpha_t, at_columns, broadcast_left, dense_targets, label_columns,
                      smoothed_targets, upcast)

__all__ = ['sigmoid_focal_value', 'sigmoid_focal_grad', 'softplus_parts', 'power']

Param = float | Tensor | None


def softplus_parts(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """sigmoid(z), sigmoid(-z), softplus(z) and log sigmoid(z), all from one exp and one
    log1p, exact in both tails."""
    e = torch.exp(-z.abs())
    log1p_e = log1p_unit(e)
    r = torch.reciprocal(1.0 + e)
    nonneg = z >= 0
    return (torch.where(nonneg, r, e * r), torch.where(nonneg, e * r, r),
            z.clamp(min=0) + log1p_e, z.clamp(max=0) - log1p_e)


def power(base: Tensor, exponent: float | Tensor, log_base: Tensor | None = None
          ) -> Tensor | float:
    """base ** exponent: small integer exponents as products, cheaper than pow in the
    compiled loops (timed by ``tools/benchmark_losses.py``); others from ``log_base`` if
    given (one exp)."""
    if isinstance(exponent, float) and exponent.is_integer() and 0 <= exponent <= 8:
        if exponent == 0:
            return 1.0
        result = base
        for _ in range(int(exponent) - 1):
            result = result * base
        return result
    if log_base is not None:
        return torch.exp(exponent * log_base)
    return base ** exponent


def _nonzero(gamma: float | Tensor) -> bool:
    return not isinstance(gamma, float) or gamma != 0


def _negative_alpha(alpha: Param) -> float | Tensor:
    return 1.0 if alpha is None else 1 - alpha


def _at(param: Param, columns: Tensor) -> Param:
    """A per-class parameter at each row's label column."""
    return param[columns] if isinstance(param, Tensor) else param


# ------------------------------------------------ one entry, by its signed logit
def _entry_loss(z: Tensor, alpha_t: float | Tensor, gamma: float | Tensor, epsilon: float,
                class_weight: Param) -> Tensor:
    """The loss of entries with signed logit z (x for a negative, -x for a positive)."""
    q, _, ce, log_q = softplus_parts(z)
    modulator = power(q, gamma, log_q)
    loss = ce * modulator * alpha_t
    if epsilon:  # Poly-1's term, unbalanced as in the paper
        loss = loss + epsilon * modulator * q
    return loss if class_weight is None else loss * class_weight


def _entry_gradient(z: Tensor, alpha_t: float | Tensor, gamma: float | Tensor, epsilon: float,
                    class_weight: Param) -> Tensor:
    """d/dz of :func:`_entry_loss`: with q = 1 - p_t = sigmoid(z),
    d/dz [a CE q^g + eps q^(g+1)] = q^g [a (q + g CE (1 - q)) + eps (g + 1) q (1 - q)]."""
    q, q_complement, ce, log_q = softplus_parts(z)
    inner = q + gamma * ce * q_complement if _nonzero(gamma) else q
    inner = inner * alpha_t
    if epsilon:
        inner = inner + epsilon * (gamma + 1) * q * q_complement
    grad = power(q, gamma, log_q) * inner
    return grad if class_weight is None else grad * class_weight


# ------------------------------------------------ class-index targets
def _label_entries(fn: Callable[..., Tensor], x: Tensor, columns: Tensor, positive: Tensor,
                   alpha: Param, gamma: float | Tensor, epsilon: float,
                   class_weight: Param) -> tuple[Tensor, Tensor]:
    """``fn`` at each row's label entry (N,), as a positive and as a negative."""
    x_y = at_columns(x, columns)
    shared = dict(gamma=_at(gamma, columns), epsilon=epsilon,
                  class_weight=_at(class_weight, columns))
    alpha_y = _at(alpha, columns)
    as_positive = fn(-x_y, alpha_t=1.0 if alpha is None else alpha_y, **shared)
    as_negative = fn(x_y, alpha_t=_negative_alpha(alpha_y), **shared)
    return torch.where(positive, as_positive, as_negative), as_negative


def _with_label_entries(dense: Tensor, columns: Tensor, entries: Tensor) -> Tensor:
    return dense.scatter(-1, columns.unsqueeze(-1), entries.unsqueeze(-1))


def _indexed_value(x: Tensor, labels: Tensor, weight: Tensor | None, reduction: str,
                   alpha: Param, **shared: Param) -> Tensor:
    columns, positive = label_columns(labels, x.shape[-1])
    dense = _entry_loss(x, alpha_t=_negative_alpha(alpha), **shared)
    entries, as_negative = _label_entries(_entry_loss, x, columns, positive, alpha, **shared)
    if reduction == 'none':
        return reduce_weighted(_with_label_entries(dense, columns, entries), weight, 'none')
    # A sum needs no entry replaced: add the difference, weighted as its entry.
    entry_weight = 1.0 if weight is None else at_columns(broadcast_left(weight, x), columns)
    total = (reduce_weighted(dense, weight, 'sum')
             + ((entries - as_negative) * entry_weight).sum())
    return total / max(x.numel(), 1) if reduction == 'mean' else total


def _indexed_grad(x: Tensor, labels: Tensor, weight: Tensor | None, grad_out: Tensor,
                  reduction: str, alpha: Param, **shared: Param) -> Tensor:
    columns, positive = label_columns(labels, x.shape[-1])
    factor = chain_factor(weight, grad_out, reduction, x.numel(), x)
    dense = _entry_gradient(x, alpha_t=_negative_alpha(alpha), **shared) * factor
    entries, _ = _label_entries(_entry_gradient, x, columns, positive, alpha, **shared)
    entries = torch.where(positive, -entries, entries)  # dz/dx = -1 for a positive
    return _with_label_entries(dense, columns, entries * at_columns(factor, columns))


# ------------------------------------------------ the kernels
def _uses_indexed_path(targets: Tensor, label_smoothing: float) -> bool:
    return not targets.dtype.is_floating_point and not label_smoothing


def _soft_parts(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For soft targets: dCE/dx = p - t, 1 - p_t = t (1 - p) + (1 - t) p, its derivative, and
    CE = t softplus(-x) + (1 - t) softplus(x); sums of same-signed terms, no cancellation."""
    p, one_minus_p, softplus_x, log_p = softplus_parts(x)
    q = t * one_minus_p + (1 - t) * p
    ce = (1 - t) * softplus_x - t * log_p
    return (1 - t) * p - t * one_minus_p, q, (1 - 2 * t) * p * one_minus_p, ce


def sigmoid_focal_value(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor,
                        *, reduction: str, alpha: Param, gamma: float | Tensor,
                        epsilon: float, class_weight: Param, label_smoothing: float) -> Tensor:
    x = upcast(logits)
    shared = dict(gamma=gamma, epsilon=epsilon, class_weight=class_weight)
    if _uses_indexed_path(targets, label_smoothing):
        return scaled(_indexed_value(x, targets, weight, reduction, alpha, **shared), scale,
                      reduction)
    t = smoothed_targets(dense_targets(targets, x), label_smoothing)
    _, q, _, ce = _soft_parts(x, t)
    modulator = power(q, gamma)
    loss = ce * modulator * alpha_t(t, alpha)
    if epsilon:  # Poly-1's term, unbalanced as in the paper
        loss = loss + epsilon * modulator * q
    if class_weight is not None:
        loss = loss * class_weight
    return scaled(reduce_weighted(loss, weight, reduction), scale, reduction)


def sigmoid_focal_grad(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor,
                       *, reduction: str, alpha: Param, gamma: float | Tensor, epsilon: float,
                       class_weight: Param, label_smoothing: float) -> Tensor:
    x = upcast(logits)
    shared = dict(gamma=gamma, epsilon=epsilon, class_weight=class_weight)
    if _uses_indexed_path(targets, label_smoothing):
        return _indexed_grad(x, targets, weight, scale, reduction, alpha,
                             **shared).to(logits.dtype)
    t = smoothed_targets(dense_targets(targets, x), label_smoothing)
    dce, q, dq, ce = _soft_parts(x, t)
    if _nonzero(gamma):
        # q ** (gamma - 1) is infinite at q = 0 for gamma < 1, where its factor dq is 0.
        q_pow = power(q, gamma - 1)
        if not isinstance(gamma, float) or gamma < 1:
            q_pow = torch.where(q > 0, q_pow, 0.0)
        modulator = q_pow * q
        grad = (dce * modulator + gamma * ce * q_pow * dq) * alpha_t(t, alpha)
    else:
        modulator, grad = 1.0, dce * alpha_t(t, alpha)
    if epsilon:
        grad = grad + epsilon * (gamma + 1) * modulator * dq
    if class_weight is not None:
        grad = grad * class_weight
    return chain_gradient(grad, weight, scale, reduction, x.numel(), logits.dtype)
