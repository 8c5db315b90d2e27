"""Fused kernels of FL* (focal-loss paper, appendix A); the readable formula is
:func:`plugin.ops.focal.focal_loss_star`. Why: as for the sigmoid family, one
compiled pass for value and gradient (timed by ``tools/benchmark_losses.py``).

Parameters (keyword-only): ``alpha`` (float, (C,) tensor or None), ``gamma`` > 0, ``beta``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .reduction import chain_gradient, reduce_weighted, scaled
from .sigmoid import softplus_parts
from .targets import alpha_t, class_mask, dense_targets, upcast

__all__ = ['focal_star_value', 'focal_star_grad']


def focal_star_value(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor, *,
                     reduction: str, alpha: float | Tensor | None, gamma: float,
                     beta: float) -> Tensor:
    x = upcast(logits)
    z = gamma * x
    if not targets.dtype.is_floating_point:  # -log sigmoid(gamma x_t + beta), x_t = +-x
        t = class_mask(targets, x)
        loss = softplus_parts(torch.where(t, -z, z) - beta)[2]
    else:
        t = dense_targets(targets, x)
        loss = t * F.softplus(-(z + beta)) + (1 - t) * F.softplus(z - beta)
    return scaled(reduce_weighted(loss * (alpha_t(t, alpha) / gamma), weight, reduction),
                  scale, reduction)


def focal_star_grad(logits: Tensor, targets: Tensor, weight: Tensor | None, scale: Tensor, *,
                    reduction: str, alpha: float | Tensor | None, gamma: float,
                    beta: float) -> Tensor:
    x = upcast(logits)
    z = gamma * x
    if not targets.dtype.is_floating_point:
        t = class_mask(targets, x)
        grad = softplus_parts(torch.where(t, -z, z) - beta)[0]
        grad = torch.where(t, -grad, grad)
    else:
        t = dense_targets(targets, x)
        grad = (1 - t) * torch.sigmoid(z - beta) - t * torch.sigmoid(-(z + beta))
    grad = grad * alpha_t(t, alpha)
    return chain_gradient(grad, weight, scale, reduction, x.numel(), logits.dtype)
