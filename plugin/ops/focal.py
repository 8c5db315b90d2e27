"""The focal-loss family on logits, as the papers write it.

Each public function states its formula in a few lines of PyTorch; that readable code runs
where no compiler is used (``PLUGIN_COMPILE=0``, devices other than CPU/CUDA, inside a
caller's ``torch.compile``). Elsewhere the same loss runs as fused, compiled value/gradient
kernels (:mod:`plugin.ops.fast`), which the tests check against the same float64 formulas.

Notation: p = sigmoid(x), t the target in [0, 1], 1 - p_t = t (1 - p) + (1 - t) p (the
probability given to the wrong answer), alpha_t = alpha t + (1 - alpha)(1 - t). log p and
log(1 - p) are taken as logsigmoid(+-x), so that values and gradients are exact in both tails.

The argument order is fvcore's (detectron2): ``sigmoid_focal_loss(inputs, targets, alpha,
gamma, reduction)`` and ``focal_loss_star(inputs, targets, alpha, gamma, reduction)``; the
plugin's extra arguments are keyword-only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fast
from .fast.targets import alpha_t, compute_dtype, dense_targets, smoothed_targets
from .params import (Alpha, FocalStarParams, Poly1FocalParams, SigmoidFocalParams,
                     SoftmaxFocalParams, check_alpha, check_inputs)

__all__ = ['sigmoid_focal_loss', 'poly1_focal_loss', 'focal_loss_star', 'softmax_focal_loss']


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25,
                       gamma: float = 2.0, reduction: str = 'none', *,
                       weight: Tensor | None = None, label_smoothing: float = 0.0,
                       normalizer: float | Tensor | None = None) -> Tensor:
    """Sigmoid focal loss (Lin et al., 2017): -alpha_t (1 - p_t)^gamma log(p_t).

    Same meaning and argument order as ``fvcore.nn.sigmoid_focal_loss`` and
    ``torchvision.ops.sigmoid_focal_loss``, which it matches to rounding.

    Args:
        inputs: logits, float tensor (..., C); float16/bfloat16 are computed in float32.
        targets: floats shaped like ``inputs`` in [0, 1] (one-hot or soft), or integer class
            indices shaped ``inputs.shape[:-1]`` where index C means background.
        alpha: balance of positives: a float in [0, 1], a sequence of C values, or None
            (a negative float, fvcore's and torchvision's convention, also means none).
        gamma: focusing parameter >= 0; 0 gives alpha-balanced binary cross entropy.
        reduction: 'none' (shaped like ``inputs``), 'mean' (over all elements) or 'sum'.
        weight: optional per-row (``inputs.shape[:k]``) or per-element weight.
        label_smoothing: eps in [0, 1): targets become t (1 - eps) + eps / 2.
        normalizer: with reduction='sum', the sum is divided by it (> 0; e.g. the number of
            positive anchors, mmdet's ``avg_factor``).

    Returns:
        The loss in float32 (float64 for float64 inputs); the gradient has ``inputs``' dtype.
    """
    params = SigmoidFocalParams(alpha, gamma, label_smoothing)
    alpha = _checked_call(inputs, targets, weight, reduction, normalizer, params.alpha)
    if fast.applies(inputs):
        return fast.SIGMOID_FOCAL(inputs, targets, reduction=reduction, weight=weight,
                                  normalizer=normalizer, alpha=alpha, gamma=params.gamma,
                                  epsilon=0.0, class_weight=None,
                                  label_smoothing=params.label_smoothing)
    x, t = _float_inputs(inputs, targets, params.label_smoothing)
    ce, q = binary_terms(x, t)
    loss = alpha_t(t, alpha) * q ** params.gamma * ce
    return reduce_loss(loss, weight, reduction, normalizer)


def poly1_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25,
                     gamma: float = 2.0, reduction: str = 'none', *, epsilon: float = 1.0,
                     weight: Tensor | None = None,
                     normalizer: float | Tensor | None = None) -> Tensor:
    """Poly-1 focal loss (Leng et al., 2022): FL + epsilon (1 - p_t)^(gamma + 1).

    As in the paper, alpha weights the focal term only. ``epsilon`` is any float: positive
    values weight the leading polynomial term more (the paper's best for RetinaNet is
    -1 <= epsilon <= 1). Other arguments, shapes and dtypes as :func:`sigmoid_focal_loss`.
    """
    params = Poly1FocalParams(alpha, gamma, epsilon)
    alpha = _checked_call(inputs, targets, weight, reduction, normalizer, params.alpha)
    if fast.applies(inputs):
        return fast.SIGMOID_FOCAL(inputs, targets, reduction=reduction, weight=weight,
                                  normalizer=normalizer, alpha=alpha, gamma=params.gamma,
                                  epsilon=params.epsilon, class_weight=None,
                                  label_smoothing=0.0)
    x, t = _float_inputs(inputs, targets)
    ce, q = binary_terms(x, t)
    loss = alpha_t(t, alpha) * q ** params.gamma * ce + params.epsilon * q ** (params.gamma + 1)
    return reduce_loss(loss, weight, reduction, normalizer)


def focal_loss_star(inputs: Tensor, targets: Tensor, alpha: Alpha = -1.0, gamma: float = 1.0,
                    reduction: str = 'none', *, beta: float = 0.0,
                    weight: Tensor | None = None,
                    normalizer: float | Tensor | None = None) -> Tensor:
    """FL* (Lin et al., 2017, appendix A): -alpha_t log(sigmoid(gamma x_t + beta)) / gamma.

    x_t = x for a positive and -x for a negative; soft targets mix the two terms linearly.
    Defaults and argument order are fvcore's ``sigmoid_focal_loss_star`` (alpha=-1: none,
    gamma=1, beta=0); the paper's settings are (gamma, beta) = (2, 1) and (4, 0). ``gamma``
    > 0 sharpens, ``beta`` shifts. Other arguments as :func:`sigmoid_focal_loss`.
    """
    params = FocalStarParams(alpha, gamma, beta)
    alpha = _checked_call(inputs, targets, weight, reduction, normalizer, params.alpha)
    if fast.applies(inputs):
        return fast.FOCAL_STAR(inputs, targets, reduction=reduction, weight=weight,
                               normalizer=normalizer, alpha=alpha, gamma=params.gamma,
                               beta=params.beta)
    x, t = _float_inputs(inputs, targets)
    gamma, beta = params.gamma, params.beta
    loss = -(t * F.logsigmoid(gamma * x + beta) + (1 - t) * F.logsigmoid(-gamma * x + beta))
    return reduce_loss(alpha_t(t, alpha) * loss / gamma, weight, reduction, normalizer)


def softmax_focal_loss(inputs: Tensor, targets: Tensor, alpha: Alpha = 0.25,
                       gamma: float = 2.0, reduction: str = 'none', *,
                       weight: Tensor | None = None,
                       normalizer: float | Tensor | None = None) -> Tensor:
    """Softmax focal loss: -alpha_y (1 - p_y)^gamma log p_y over C + 1 outputs.

    Args:
        inputs: logits (N, C + 1), background last.
        targets: class indices (N,) in [0, C], or a probability distribution (N, C + 1)
            (the loss is then sum_c t_c alpha_c (1 - p_c)^gamma (-log p_c)).
        alpha: a float gives alpha to every class and 1 - alpha to background; a sequence
            one value per output (C + 1); None no balancing.
        gamma: focusing parameter >= 0; 0 gives (alpha-weighted) softmax cross entropy.
        reduction: 'none' (per row, shape (N,)), 'mean' (over rows) or 'sum'.
        weight: optional per-row weight (N,).
        normalizer: as :func:`sigmoid_focal_loss`.
    """
    params = SoftmaxFocalParams(alpha, gamma)
    if weight is not None and weight.dim() >= inputs.dim():
        raise ValueError(f'softmax focal loss takes a per-row weight of shape '
                         f'{tuple(inputs.shape[:-1])}, got {tuple(weight.shape)}')
    check_inputs(inputs, targets, weight, max_label=inputs.shape[-1] - 1, reduction=reduction,
                 normalizer=normalizer)
    alpha = _softmax_alpha(params.alpha, inputs)
    if fast.applies(inputs):
        lse, log_p_y = fast.softmax_row_terms(
            inputs, None if targets.dtype.is_floating_point else targets)
        return fast.SOFTMAX_FOCAL(inputs, targets, reduction=reduction, weight=weight,
                                  normalizer=normalizer, lse=lse, log_p_y=log_p_y,
                                  alpha=alpha, gamma=params.gamma)
    x, t = _float_inputs(inputs, targets)
    log_p = F.log_softmax(x, dim=-1)
    focal = -(-torch.expm1(log_p)).clamp(min=_tiny(x)) ** params.gamma * log_p
    loss = (t * focal * (1.0 if alpha is None else alpha)).sum(-1)
    return reduce_loss(loss, weight, reduction, normalizer)


# ---------------------------------------------------------------- shared pieces
def binary_terms(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """CE = -t log p - (1 - t) log(1 - p) with log p = logsigmoid(x), log(1 - p) =
    logsigmoid(-x) (no cancellation in either tail), and 1 - p_t = t (1 - p) + (1 - t) p,
    kept above the smallest normal number: the gradient of (1 - p_t)^gamma for gamma < 1 is
    infinite at 0."""
    ce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    q = t * torch.sigmoid(-x) + (1 - t) * torch.sigmoid(x)
    return ce, q.clamp(min=_tiny(x))


def reduce_loss(loss: Tensor, weight: Tensor | None, reduction: str,
                normalizer: float | Tensor | None = None) -> Tensor:
    """Weight (per row or per element, broadcast from the left), then reduce: 'none', 'mean'
    (0 for no elements) or 'sum', divided by ``normalizer`` if one is given."""
    if weight is not None:
        loss = loss * weight.reshape(weight.shape + (1,) * (loss.dim() - weight.dim()))
    if reduction == 'none':
        return loss
    if normalizer is not None:
        return loss.sum() / normalizer
    return loss.sum() / max(loss.numel(), 1) if reduction == 'mean' else loss.sum()


def _float_inputs(inputs: Tensor, targets: Tensor,
                  label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Logits in the compute dtype, and dense float targets (class indices one-hot)."""
    x = inputs.to(compute_dtype(inputs))
    t = dense_targets(targets, x)
    return x, smoothed_targets(t, label_smoothing)


def _checked_call(inputs: Tensor, targets: Tensor, weight: Tensor | None, reduction: str,
                  normalizer: float | Tensor | None, alpha: Alpha) -> float | Tensor | None:
    """Checks a sigmoid-family call; returns alpha on ``inputs``' device."""
    num_classes = inputs.shape[-1] if inputs.dim() else 1
    check_inputs(inputs, targets, weight, max_label=num_classes, reduction=reduction,
                 normalizer=normalizer)
    alpha = check_alpha(alpha, num_classes)
    return alpha.to(inputs.device) if isinstance(alpha, Tensor) else alpha


def _softmax_alpha(alpha: Alpha, inputs: Tensor) -> Tensor | None:
    """Per-output alpha (C + 1,): a float is alpha for classes, 1 - alpha for background."""
    checked = check_alpha(alpha, inputs.shape[-1])
    # float64 logits keep alpha in float64; every other dtype computes in float32
    dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    if isinstance(checked, float):
        checked = torch.full((inputs.shape[-1],), checked, dtype=dtype)
        checked[-1] = 1.0 - float(alpha)
    return None if checked is None else checked.to(inputs.device)


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny
