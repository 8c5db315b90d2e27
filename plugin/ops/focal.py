"""Focal-loss family on logits: sigmoid focal loss, Poly-1, FL* and softmax focal loss.

Every function takes raw logits and either class-index targets or dense (soft) targets, and
returns a loss with the requested reduction. Forward keeps only logits and targets for the
backward pass; gradients are analytic (see :mod:`plugin.ops.fusion`).

Notation: p = sigmoid(x), t the target in [0, 1], 1 - p_t = t (1 - p) + (1 - t) p (the
probability given to the wrong answer), alpha_t = alpha t + (1 - alpha)(1 - t).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .fusion import (FusedKernel, LossKernels, at_columns, broadcast_left, chain_factor,
                     chain_gradient, check_reduction, class_mask, compile_enabled, dense_targets,
                     fused_loss, label_columns, reduce_weighted, upcast)

__all__ = ['sigmoid_focal_loss', 'poly1_focal_loss', 'focal_loss_star', 'softmax_focal_loss',
           'check_gamma', 'check_alpha', 'check_inputs', 'generalized_sigmoid_focal_loss']

Alpha = float | Sequence[float] | Tensor | None


# ---------------------------------------------------------------- argument checks
def check_gamma(gamma: float, name: str = 'gamma', strictly_positive: bool = False) -> float:
    gamma = float(gamma)
    if gamma < 0 or (strictly_positive and gamma == 0) or gamma != gamma:
        allowed = '> 0' if strictly_positive else '>= 0'
        raise ValueError(f'{name}={gamma} is not allowed; {name} must be a number {allowed}')
    return gamma


def check_alpha(alpha: Alpha, num_classes: int | None = None,
                name: str = 'alpha') -> float | Tensor | None:
    """Validate alpha: None, a float in [0, 1], or one value in [0, 1] per class."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'{name}={alpha} is outside [0, 1]; allowed: a float in [0, 1], '
                             f'a per-class list of such floats, or None (no balancing)')
        return float(alpha)
    values = torch.as_tensor(alpha, dtype=torch.float32).flatten()
    if num_classes is not None and values.numel() != num_classes:
        raise ValueError(f'per-class {name} has {values.numel()} values but there are '
                         f'{num_classes} classes; give exactly one value per class')
    if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
        raise ValueError(f'per-class {name} has values outside [0, 1]: {values.tolist()}')
    return values


def check_inputs(logits: Tensor, targets: Tensor, weight: Tensor | None,
                 max_label: int) -> None:
    """Shapes and label range, with errors that name the argument.

    Integer ``targets`` are class indices in [0, max_label], their values checked on CPU only
    (on a GPU the check would synchronize every step); float targets match ``logits``.
    """
    if not logits.dtype.is_floating_point:
        raise TypeError(f'logits must be a floating tensor, got dtype {logits.dtype}')
    if targets.dtype.is_floating_point:
        if targets.shape != logits.shape:
            raise ValueError(f'float (one-hot or soft) targets must match logits: targets '
                             f'{tuple(targets.shape)} vs logits {tuple(logits.shape)}')
    else:
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f'class-index targets must have shape {tuple(logits.shape[:-1])} '
                             f'for logits {tuple(logits.shape)}, got {tuple(targets.shape)}')
        # Read on CPU only: on a GPU it would stall the stream every step.
        checked = targets.numel() and targets.device.type == 'cpu'
        low, high = torch.stack(torch.aminmax(targets)).tolist() if checked else (0, 0)
        if low < 0 or high > max_label:
            background = ('the last output' if max_label == logits.shape[-1] - 1
                          else f'{max_label}, for a classifier without a background output')
            raise ValueError(f'labels must lie in [0, {max_label}] (background = {background}), '
                             f'got min {low}, max {high}')
    if weight is not None and (weight.dim() > logits.dim()
                               or weight.shape != logits.shape[:weight.dim()]):
        raise ValueError(f'weight of shape {tuple(weight.shape)} does not fit logits '
                         f'{tuple(logits.shape)}; allowed: per-row {tuple(logits.shape[:1])} '
                         f'or per-element {tuple(logits.shape)}')


def _alpha_t(t: Tensor, alpha: float | Tensor | None) -> Tensor | float:
    """alpha for positives, 1 - alpha for negatives; ``t`` a bool mask or float targets."""
    if alpha is None:
        return 1.0
    if t.dtype == torch.bool:
        return torch.where(t, alpha, 1 - alpha)
    return alpha * t + (1 - alpha) * (1 - t)


def _as_param(value: float | Tensor | None, like: Tensor) -> float | Tensor | None:
    return value.to(like.device) if isinstance(value, Tensor) else value


# ---------------------------------------------------------------- sigmoid focal (+ Poly-1, EFL)
def _power(base: Tensor, exponent: float | Tensor, log_base: Tensor | None = None
           ) -> Tensor | float:
    """base ** exponent; small integer exponents as products (pow costs ~10x a multiply)."""
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


# log1p(e) / (2u) with u = e / (2 + e), as a polynomial in v = u^2 on [0, 1/9]: a least-squares
# fit reweighted towards minimax relative error (Lawson), max relative error 4.0e-9.
_LOG1P_COEFFICIENTS = (1.0000000039555668, 0.3333315752731701, 0.2001244510261989,
                       0.13980468393036233, 0.14088318489822574)
# Doubled, so that the loop computes u * poly rather than 2 * u * poly (exact either way).
_LOG1P_COEFFICIENTS_X2 = tuple(2 * c for c in _LOG1P_COEFFICIENTS)


def log1p_unit(e: Tensor) -> Tensor:
    """log1p(e) for e in [0, 1], as in softplus(z) = max(z, 0) + log1p(exp(-|z|)).

    In a compiled float32 loop (what float16/bfloat16 compute in too) this is
    :func:`log1p_polynomial`, about a third of the cost of a vectorized log1p, the dearest
    operation of the focal-loss loop. Eagerly each of its terms would be a pass over memory,
    and float64 needs more digits: there it is ``torch.log1p``.
    """
    if e.dtype == torch.float32 and torch.compiler.is_compiling():
        return log1p_polynomial(e)
    return torch.log1p(e)


def log1p_polynomial(e: Tensor) -> Tensor:
    """log1p(e) for float32 e in [0, 1], within 2 ulp: 2 atanh(u) with u = e / (2 + e) in
    [0, 1/3], a degree-4 polynomial in u^2."""
    u = e / (2 + e)
    v = u * u
    poly = _LOG1P_COEFFICIENTS_X2[-1]
    for coefficient in reversed(_LOG1P_COEFFICIENTS_X2[:-1]):
        poly = poly * v + coefficient
    return u * poly


def _softplus_parts(z: Tensor) -> tuple[Tensor, ...]:
    """sigmoid(z), sigmoid(-z), softplus(z) and log sigmoid(z), all from one exp and one
    log1p, exact in both tails."""
    e = torch.exp(-z.abs())
    log1p_e = log1p_unit(e)
    r = torch.reciprocal(1.0 + e)
    nonneg = z >= 0
    return (torch.where(nonneg, r, e * r), torch.where(nonneg, e * r, r),
            z.clamp(min=0) + log1p_e, z.clamp(max=0) - log1p_e)


def _soft_parts(x: Tensor, t: Tensor) -> tuple[Tensor, ...]:
    """For soft targets: dCE/dx = p - t, 1 - p_t = t (1 - p) + (1 - t) p, its derivative, and
    CE = t softplus(-x) + (1 - t) softplus(x); sums of same-signed terms, no cancellation."""
    p, one_minus_p, softplus_x, log_p = _softplus_parts(x)
    q = t * one_minus_p + (1 - t) * p
    ce = (1 - t) * softplus_x - t * log_p
    return (1 - t) * p - t * one_minus_p, q, (1 - 2 * t) * p * one_minus_p, ce


def _hard_targets(targets: Tensor, label_smoothing: float) -> bool:
    return not targets.dtype.is_floating_point and not label_smoothing


# With class-index targets, every entry is a negative but the label's: the dense pass treats
# them all as negatives (no per-entry target test, no selects) and one entry per row is then
# replaced by its positive value.
def _negative_alpha(alpha: float | Tensor | None) -> float | Tensor:
    return 1.0 if alpha is None else 1 - alpha


def _at(param: float | Tensor | None, columns: Tensor) -> float | Tensor | None:
    """A per-class parameter at each row's label column."""
    return param[columns] if isinstance(param, Tensor) else param


def _hard_loss(z: Tensor, alpha_t: float | Tensor, gamma: float | Tensor, epsilon: float,
               class_weight: Tensor | None) -> Tensor:
    """The loss of entries with signed logit z (x for a negative, -x for a positive)."""
    q, _, ce, log_q = _softplus_parts(z)
    modulator = _power(q, gamma, log_q)
    loss = ce * modulator * alpha_t
    if epsilon:  # Poly-1's term, unbalanced as in the paper
        loss = loss + epsilon * modulator * q
    return loss if class_weight is None else loss * class_weight


def _hard_loss_gradient(z: Tensor, alpha_t: float | Tensor, gamma: float | Tensor,
                        epsilon: float, class_weight: Tensor | None) -> Tensor:
    """d/dz of :func:`_hard_loss`: with q = 1 - p_t = sigmoid(z),
    d/dz [a CE q^g + eps q^(g+1)] = q^g [a (q + g CE (1 - q)) + eps (g + 1) q (1 - q)]."""
    q, q_complement, ce, log_q = _softplus_parts(z)
    inner = q + gamma * ce * q_complement if _nonzero(gamma) else q
    inner = inner * alpha_t
    if epsilon:
        inner = inner + epsilon * (gamma + 1) * q * q_complement
    grad = _power(q, gamma, log_q) * inner
    return grad if class_weight is None else grad * class_weight


def _label_entries(fn: Callable[..., Tensor], x: Tensor, columns: Tensor, positive: Tensor,
                   alpha: float | Tensor | None, gamma: float | Tensor, epsilon: float,
                   class_weight: Tensor | None) -> tuple[Tensor, Tensor]:
    """``fn`` at each row's label entry (N,), as a positive and as a negative."""
    x_y = at_columns(x, columns)
    params = (_at(gamma, columns), epsilon, _at(class_weight, columns))
    as_positive = fn(-x_y, 1.0 if alpha is None else _at(alpha, columns), *params)
    as_negative = fn(x_y, _negative_alpha(_at(alpha, columns)), *params)
    return torch.where(positive, as_positive, as_negative), as_negative


def _with_label_entries(dense: Tensor, columns: Tensor, entries: Tensor) -> Tensor:
    return dense.scatter(-1, columns.unsqueeze(-1), entries.unsqueeze(-1))


def _hard_value(x: Tensor, targets: Tensor, weight: Tensor | None, reduction: str,
                alpha: float | Tensor | None, gamma: float | Tensor, epsilon: float,
                class_weight: Tensor | None) -> Tensor:
    columns, positive = label_columns(targets, x.shape[-1])
    params = (gamma, epsilon, class_weight)
    dense = _hard_loss(x, _negative_alpha(alpha), *params)
    entries, as_negative = _label_entries(_hard_loss, x, columns, positive, alpha, *params)
    if reduction == 'none':
        return reduce_weighted(_with_label_entries(dense, columns, entries), weight, 'none')
    # A sum needs no entry replaced: add the difference, weighted as its entry.
    entry_weight = 1.0 if weight is None else at_columns(broadcast_left(weight, x), columns)
    total = (reduce_weighted(dense, weight, 'sum')
             + ((entries - as_negative) * entry_weight).sum())
    return total / max(x.numel(), 1) if reduction == 'mean' else total


def _hard_grad(x: Tensor, targets: Tensor, weight: Tensor | None, grad_out: Tensor,
               reduction: str, alpha: float | Tensor | None, gamma: float | Tensor,
               epsilon: float, class_weight: Tensor | None) -> Tensor:
    columns, positive = label_columns(targets, x.shape[-1])
    params = (gamma, epsilon, class_weight)
    factor = chain_factor(weight, grad_out, reduction, x.numel(), x)
    dense = _hard_loss_gradient(x, _negative_alpha(alpha), *params) * factor
    entries, _ = _label_entries(_hard_loss_gradient, x, columns, positive, alpha, *params)
    entries = torch.where(positive, -entries, entries)  # dz/dx = -1 for a positive
    return _with_label_entries(dense, columns, entries * at_columns(factor, columns))


def _sigmoid_focal_value(logits: Tensor, targets: Tensor, weight: Tensor | None, reduction: str,
                         alpha: float | Tensor | None, gamma: float | Tensor, epsilon: float,
                         class_weight: Tensor | None, label_smoothing: float) -> Tensor:
    x = upcast(logits)
    if _hard_targets(targets, label_smoothing):
        return _hard_value(x, targets, weight, reduction, alpha, gamma, epsilon, class_weight)
    t = _smoothed(dense_targets(targets, x), label_smoothing)
    _, q, _, ce = _soft_parts(x, t)
    modulator = _power(q, gamma)
    loss = ce * modulator * _alpha_t(t, alpha)
    if epsilon:  # Poly-1's term, unbalanced as in the paper
        loss = loss + epsilon * modulator * q
    if class_weight is not None:
        loss = loss * class_weight
    return reduce_weighted(loss, weight, reduction)


def _sigmoid_focal_grad(logits: Tensor, targets: Tensor, weight: Tensor | None,
                        grad_out: Tensor, reduction: str, alpha: float | Tensor | None,
                        gamma: float | Tensor, epsilon: float, class_weight: Tensor | None,
                        label_smoothing: float) -> Tensor:
    x = upcast(logits)
    if _hard_targets(targets, label_smoothing):
        grad = _hard_grad(x, targets, weight, grad_out, reduction, alpha, gamma, epsilon,
                          class_weight)
        return grad.to(logits.dtype)
    t = _smoothed(dense_targets(targets, x), label_smoothing)
    dce, q, dq, ce = _soft_parts(x, t)
    if _nonzero(gamma):
        # q ** (gamma - 1) is infinite at q = 0 for gamma < 1, where its factor dq is 0.
        q_pow = _power(q, gamma - 1)
        if not isinstance(gamma, float) or gamma < 1:
            q_pow = torch.where(q > 0, q_pow, 0.0)
        modulator = q_pow * q
        grad = (dce * modulator + gamma * ce * q_pow * dq) * _alpha_t(t, alpha)
    else:
        modulator, grad = 1.0, dce * _alpha_t(t, alpha)
    if epsilon:
        grad = grad + epsilon * (gamma + 1) * modulator * dq
    if class_weight is not None:
        grad = grad * class_weight
    return chain_gradient(grad, weight, grad_out, reduction, x.numel(), logits.dtype)


def _nonzero(gamma: float | Tensor) -> bool:
    return not isinstance(gamma, float) or gamma != 0


def _smoothed(t: Tensor, label_smoothing: float) -> Tensor:
    return t * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else t


def sigmoid_focal_kernels(statistics: Callable[[Tensor, Tensor], Any] | None = None,
                          summarize: Callable[[Any, Tensor], Tensor] | None = None
                          ) -> LossKernels:
    """The sigmoid family's kernels, optionally with gradient statistics (see LossKernels)."""
    return LossKernels(_sigmoid_focal_value, _sigmoid_focal_grad, statistics, summarize)


SIGMOID_FOCAL = sigmoid_focal_kernels()


def generalized_sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha,
                               gamma: float | Tensor, epsilon: float, reduction: str,
                               weight: Tensor | None, class_weight: Tensor | None,
                               label_smoothing: float, *, kernels: LossKernels | None = None,
                               on_backward: Callable[[Tensor], None] | None = None,
                               normalizer: float | Tensor | None = None) -> Tensor:
    """The sigmoid family in one kernel: class_weight_c alpha_t CE (1 - p_t)^gamma_c
    + epsilon (1 - p_t)^(gamma_c + 1), with gamma a float or per class (C,) (EFL) and an
    optional per-class weight (C,). Shapes and reduction as :func:`sigmoid_focal_loss`.
    ``kernels`` may add gradient statistics (EFL), handed to ``on_backward``."""
    check_reduction(reduction)
    num_classes = inputs.shape[-1] if inputs.dim() else 1
    check_inputs(inputs, targets, weight, max_label=num_classes)
    alpha = _as_param(check_alpha(alpha, num_classes), inputs)
    params = (alpha, _as_param(gamma, inputs), float(epsilon),
              _as_param(class_weight, inputs), float(label_smoothing))
    return fused_loss(kernels or SIGMOID_FOCAL, inputs, targets, weight, reduction, params,
                      on_backward, normalizer)


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25,
                       gamma: float = 2.0, reduction: str = 'none', *,
                       weight: Tensor | None = None, label_smoothing: float = 0.0,
                       normalizer: float | Tensor | None = None) -> Tensor:
    """Sigmoid focal loss (Lin et al., 2017): -alpha_t (1 - p_t)^gamma log(p_t).

    Same meaning as ``torchvision.ops.sigmoid_focal_loss``, which it matches to rounding.

    Args:
        inputs: logits, float tensor of any shape (..., C); float16/bfloat16 are computed in
            float32 and the gradient is returned in the input dtype.
        targets: float tensor shaped like ``inputs`` with values in [0, 1] (one-hot or soft),
            or an integer tensor of class indices shaped ``inputs.shape[:-1]`` where index C
            means background (all-zero row).
        alpha: balance of positives; a float in [0, 1], a per-class sequence of length C,
            or None (a negative float, torchvision's convention, also means none).
        gamma: focusing parameter >= 0; 0 gives alpha-balanced binary cross entropy.
        reduction: 'none' (loss shaped like ``inputs``), 'mean' (over all elements) or 'sum'.
        weight: optional per-row (``inputs.shape[:k]``) or per-element weight.
        label_smoothing: eps in [0, 1): targets become t (1 - eps) + eps / 2.
        normalizer: with reduction='sum', the sum is divided by it (> 0; e.g. the number of
            positive anchors, mmdet's ``avg_factor``) inside the fused pass.

    Returns:
        float32 loss (or ``inputs``' dtype for float64).
    """
    if isinstance(alpha, (int, float)) and alpha < 0:
        alpha = None
    _check_smoothing(label_smoothing)
    return generalized_sigmoid_focal_loss(inputs, targets, alpha, check_gamma(gamma), 0.0,
                                          reduction, weight, None, label_smoothing,
                                          normalizer=normalizer)


def poly1_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25, gamma: float = 2.0,
                     epsilon: float = 1.0, reduction: str = 'none', *,
                     weight: Tensor | None = None,
                     normalizer: float | Tensor | None = None) -> Tensor:
    """Poly-1 focal loss (Leng et al., 2022): FL + epsilon (1 - p_t)^(gamma + 1).

    As in the paper, alpha weights the focal term only. Arguments as
    :func:`sigmoid_focal_loss`; ``epsilon`` is any float: positive values put more weight on
    the leading polynomial term (the paper's best for RetinaNet is -1 <= epsilon <= 1).
    """
    epsilon = float(epsilon)
    if epsilon != epsilon:
        raise ValueError('epsilon must be a number, got nan')
    return generalized_sigmoid_focal_loss(inputs, targets, alpha, check_gamma(gamma), epsilon,
                                          reduction, weight, None, 0.0, normalizer=normalizer)


def _check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f'label_smoothing={label_smoothing} is outside [0, 1)')


# ---------------------------------------------------------------- FL* (paper, appendix A)
def _focal_star_value(logits: Tensor, targets: Tensor, weight: Tensor | None, reduction: str,
                      alpha: float | Tensor | None, gamma: float, beta: float) -> Tensor:
    x = upcast(logits)
    z = gamma * x
    if _hard_targets(targets, 0.0):  # -log sigmoid(gamma x_t + beta), x_t = (2t - 1) x
        t = class_mask(targets, x)
        loss = _softplus_parts(torch.where(t, -z, z) - beta)[2]
    else:
        t = dense_targets(targets, x)
        loss = t * F.softplus(-(z + beta)) + (1 - t) * F.softplus(z - beta)
    return reduce_weighted(loss * (_alpha_t(t, alpha) / gamma), weight, reduction)


def _focal_star_grad(logits: Tensor, targets: Tensor, weight: Tensor | None, grad_out: Tensor,
                     reduction: str, alpha: float | Tensor | None, gamma: float,
                     beta: float) -> Tensor:
    x = upcast(logits)
    z = gamma * x
    if _hard_targets(targets, 0.0):
        t = class_mask(targets, x)
        grad = _softplus_parts(torch.where(t, -z, z) - beta)[0]
        grad = torch.where(t, -grad, grad)
    else:
        t = dense_targets(targets, x)
        grad = (1 - t) * torch.sigmoid(z - beta) - t * torch.sigmoid(-(z + beta))
    grad = grad * _alpha_t(t, alpha)
    return chain_gradient(grad, weight, grad_out, reduction, x.numel(), logits.dtype)


FOCAL_STAR = LossKernels(_focal_star_value, _focal_star_grad)


def focal_loss_star(inputs: Tensor, targets: Tensor, gamma: float = 2.0, beta: float = 1.0,
                    alpha: Alpha = 0.25, reduction: str = 'none', *,
                    weight: Tensor | None = None,
                    normalizer: float | Tensor | None = None) -> Tensor:
    """FL* (Lin et al., 2017, appendix A): -alpha_t log(sigmoid(gamma x_t + beta)) / gamma.

    x_t = x for a positive and -x for a negative; soft targets mix the two terms linearly.
    ``gamma`` > 0 sharpens, ``beta`` shifts; the paper's settings are (2, 1) and (4, 0).
    Other arguments as :func:`sigmoid_focal_loss`.
    """
    check_reduction(reduction)
    gamma = check_gamma(gamma, strictly_positive=True)
    check_inputs(inputs, targets, weight, max_label=inputs.shape[-1])
    alpha = _as_param(check_alpha(alpha, inputs.shape[-1]), inputs)
    return fused_loss(FOCAL_STAR, inputs, targets, weight, reduction,
                      (alpha, gamma, float(beta)), normalizer=normalizer)


# ---------------------------------------------------------------- softmax focal
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


_LOGSUMEXP = FusedKernel(_logsumexp)
_LABEL_TERMS = FusedKernel(_label_terms)
_LABEL_TERMS_SHIFTED = FusedKernel(_label_terms_shifted)


def softmax_row_terms(logits: Tensor, labels: Tensor | None = None
                      ) -> tuple[Tensor, Tensor | None]:
    """Per row, without gradient: logsumexp over the classes and, with labels, log p_y.

    Args:
        logits: (N, K) float.
        labels: optional (N,) class indices in [0, K).

    Returns:
        lse (N,) and log p_y (N,) (None without labels), in
        :func:`~plugin.ops.fusion.compute_dtype`.

    A compiled CPU loop over all rows would take the row maxima in one sweep of memory and
    the sums in a second. Shifted by the label's logit instead, one sweep does; rows whose
    shifted sum overflows are recomputed with the max. A GPU kernel holds the row in
    registers and eager mode gains nothing: both use the max.
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


def _softmax_focal_value(logits: Tensor, targets: Tensor, weight: Tensor | None,
                         reduction: str, lse: Tensor, log_p_y: Tensor | None,
                         alpha: Tensor | None, gamma: float) -> Tensor:
    if log_p_y is not None:  # class-index targets: one term per row, read from log p_y
        alpha_y = 1.0 if alpha is None else alpha[targets]
        loss = -alpha_y * _power(-torch.expm1(log_p_y), gamma) * log_p_y
        return reduce_weighted(loss, weight, reduction)
    x = upcast(logits)
    t = dense_targets(targets, x)
    log_p = x - lse.unsqueeze(-1)
    loss = -t * _power(-torch.expm1(log_p), gamma) * log_p
    if alpha is not None:
        loss = loss * alpha
    return reduce_weighted(loss.sum(-1), weight, reduction)


def _softmax_focal_grad(logits: Tensor, targets: Tensor, weight: Tensor | None,
                        grad_out: Tensor, reduction: str, lse: Tensor,
                        log_p_y: Tensor | None, alpha: Tensor | None,
                        gamma: float) -> Tensor:
    """d/dz of a loss on class c is g_c (onehot_c - p): summed over c with weights t_c, where
    g_c = alpha_c (gamma (1 - p_c)^(gamma - 1) p_c log p_c - (1 - p_c)^gamma)."""
    x = upcast(logits)
    log_p = x - lse.unsqueeze(-1)
    t = dense_targets(targets, x)
    if log_p_y is not None:
        alpha_y = 1.0 if alpha is None else alpha[targets]
        g_y = _softmax_focal_factor(log_p_y, -torch.expm1(log_p_y), gamma) * alpha_y
        grad = g_y.unsqueeze(-1) * (t - torch.exp(log_p))
    else:
        per_class = t * _softmax_focal_factor(log_p, -torch.expm1(log_p), gamma)
        if alpha is not None:
            per_class = per_class * alpha
        grad = per_class - per_class.sum(-1, keepdim=True) * torch.exp(log_p)
    return chain_gradient(grad, weight, grad_out, reduction, x[..., 0].numel(), logits.dtype)


def _softmax_focal_factor(log_p: Tensor, one_minus_p: Tensor, gamma: float) -> Tensor:
    if gamma == 0:
        return -torch.ones_like(log_p)
    pow_m1 = _power(one_minus_p, gamma - 1)
    if gamma < 1:  # infinite at p = 1, where its factor log p is 0
        pow_m1 = torch.where(one_minus_p > 0, pow_m1, 0.0)
    return gamma * pow_m1 * torch.exp(log_p) * log_p - pow_m1 * one_minus_p


SOFTMAX_FOCAL = LossKernels(_softmax_focal_value, _softmax_focal_grad)


def softmax_alpha(alpha: Alpha, num_outputs: int) -> Tensor | None:
    """Per-output alpha for a softmax over C classes + background (last).

    A float gives alpha to every class and 1 - alpha to background; a sequence must have one
    value per output (C + 1); None applies no balancing.
    """
    checked = check_alpha(alpha, num_outputs)
    if not isinstance(checked, float):
        return checked
    values = torch.full((num_outputs,), checked)
    values[-1] = 1.0 - checked
    return values


def softmax_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25,
                       gamma: float = 2.0, reduction: str = 'none', *,
                       weight: Tensor | None = None,
                       normalizer: float | Tensor | None = None) -> Tensor:
    """Softmax focal loss: -alpha_y (1 - p_y)^gamma log p_y over C + 1 outputs.

    Args:
        inputs: logits (N, C + 1), background last.
        targets: class indices (N,) in [0, C], or a probability distribution (N, C + 1).
        alpha: see :func:`softmax_alpha`.
        gamma: focusing parameter >= 0; 0 gives (alpha-weighted) softmax cross entropy.
        reduction: 'none' (per row, shape (N,)), 'mean' (over rows) or 'sum'.
        weight: optional per-row weight (N,).
        normalizer: as :func:`sigmoid_focal_loss`.
    """
    check_reduction(reduction)
    gamma = check_gamma(gamma)
    num_outputs = inputs.shape[-1]
    check_inputs(inputs, targets, weight, max_label=num_outputs - 1)
    if weight is not None and weight.dim() >= inputs.dim():
        raise ValueError(f'softmax focal loss takes a per-row weight of shape '
                         f'{tuple(inputs.shape[:-1])}, got {tuple(weight.shape)}')
    alpha = _as_param(softmax_alpha(alpha, num_outputs), inputs)
    terms = softmax_row_terms(inputs, None if targets.dtype.is_floating_point else targets)
    return fused_loss(SOFTMAX_FOCAL, inputs, targets, weight, reduction, (*terms, alpha, gamma),
                      normalizer=normalizer)
