"""Equalized focal loss (Li et al., 2022) for long-tailed dense detection.

Each class j gets its own focusing parameter gamma_j = gamma_b + s (1 - g_j), where g_j in
[0, 1] is the accumulated ratio of positive to negative gradient magnitude for class j: rare
classes, swamped by negatives (g_j -> 0), get stronger focusing, and their loss is scaled up by
gamma_j / gamma_b so that they are not simply down-weighted.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import fast
from .fast.targets import alpha_t, compute_dtype
from .focal import _checked_call, _float_inputs, binary_terms, reduce_loss
from .params import Alpha, EqualizedFocalParams

__all__ = ['equalized_focal_gammas', 'equalized_focal_loss']


def equalized_focal_gammas(pos_grad: Tensor, neg_grad: Tensor, gamma_b: float,
                           scale_factor: float) -> Tensor:
    """Per-class gamma_j = gamma_b + scale_factor * (1 - g_j) from accumulated gradients.

    Args:
        pos_grad, neg_grad: (C,) accumulated |dL/dx| of positive and negative entries.
        gamma_b, scale_factor: the base focusing parameter and s.

    Returns:
        (C,) float tensor. A class without statistics yet (neg_grad == 0) has g_j = 1,
        i.e. plain focal loss.
    """
    ratio = torch.where(neg_grad > 0, (pos_grad / neg_grad.clamp(min=1e-30)).clamp(0, 1),
                        torch.ones_like(pos_grad))
    return gamma_b + scale_factor * (1 - ratio)


def equalized_focal_loss(inputs: Tensor, targets: Tensor, class_gamma: Tensor,
                         gamma_b: float = 2.0, alpha: Alpha = 0.25, reduction: str = 'none',
                         *, weight: Tensor | None = None,
                         on_gradient_totals: Callable[[Tensor], None] | None = None,
                         normalizer: float | Tensor | None = None) -> Tensor:
    """alpha_t (gamma_j / gamma_b) (1 - p_t)^gamma_j BCE, with gamma_j from ``class_gamma``.

    Args:
        inputs: logits (N, C); targets: class indices (N,) with C = background, or (N, C)
            floats in [0, 1].
        class_gamma: (C,) per-class focusing parameters, e.g. :func:`equalized_focal_gammas`.
        gamma_b: base focusing parameter (> 0) that normalizes the per-class weight.
        alpha, reduction, weight, normalizer: as :func:`plugin.ops.sigmoid_focal_loss`.
        on_gradient_totals: called during backward with a (2, C) tensor, the per-class sums
            of |dL/dx| over positive and negative entries (what EFL accumulates).
    """
    params = EqualizedFocalParams(gamma_b=gamma_b, alpha=alpha)
    if class_gamma.shape != inputs.shape[-1:]:
        raise ValueError(f'class_gamma must have shape ({inputs.shape[-1]},) for logits '
                         f'{tuple(inputs.shape)}, got {tuple(class_gamma.shape)}')
    alpha = _checked_call(inputs, targets, weight, reduction, normalizer, params.alpha)
    gammas = class_gamma.detach().to(device=inputs.device, dtype=compute_dtype(inputs))
    if fast.applies(inputs):
        return fast.EQUALIZED_FOCAL(inputs, targets, reduction=reduction, weight=weight,
                                    normalizer=normalizer, on_backward=on_gradient_totals,
                                    alpha=alpha, gamma=gammas, epsilon=0.0,
                                    class_weight=gammas / params.gamma_b, label_smoothing=0.0)
    x, t = _float_inputs(inputs, targets)
    if on_gradient_totals is not None and x.requires_grad:
        x = x.view_as(x)  # a tensor of this call's own, to hook its gradient
        x.register_hook(lambda grad: on_gradient_totals(gradient_totals(grad, t)))
    ce, q = binary_terms(x, t)
    loss = alpha_t(t, alpha) * (gammas / params.gamma_b) * q ** gammas * ce
    return reduce_loss(loss, weight, reduction, normalizer)


def gradient_totals(grad: Tensor, t: Tensor) -> Tensor:
    """(2, C): per-class sums of |grad| over positive entries (weighted by t) and over
    negative ones (by 1 - t)."""
    g = grad.abs().reshape(-1, grad.shape[-1])
    positive = (g * t.reshape(g.shape)).sum(0)
    return torch.stack([positive, g.sum(0) - positive])
