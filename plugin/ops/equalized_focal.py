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

from .focal import Alpha, check_gamma, generalized_sigmoid_focal_loss, sigmoid_focal_kernels
from .fusion import at_columns, compute_dtype, dense_targets, label_columns, upcast

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


_ROW_BLOCKS = 64


def _column_sums(values: Tensor) -> Tensor:
    """(N, C) -> (C,) sums over rows, taken in row blocks first: a compiled loop then runs in
    parallel over the blocks, not over a few strips of 16 columns (3x faster here)."""
    head = values.shape[0] // _ROW_BLOCKS * _ROW_BLOCKS
    blocks = values[:head].reshape(_ROW_BLOCKS, -1, values.shape[-1]).sum(1)
    return blocks.sum(0) + values[head:].sum(0)


def _class_gradient_parts(grad: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class sums of |grad| (C,), and what the positives add: per class (C,) for float
    targets; for class-index targets, |grad| at each row's label (N,), 0 for background."""
    g = upcast(grad).abs()
    total = _column_sums(g)
    if targets.dtype.is_floating_point:
        return total, _column_sums(g * dense_targets(targets, g))
    columns, positive = label_columns(targets, g.shape[-1])
    return total, torch.where(positive, at_columns(g, columns), 0.0)


def _class_gradient_totals(parts: tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
    """(2, C): per-class sums of |grad| over positive and over negative entries."""
    total, positive = parts
    if not targets.dtype.is_floating_point:
        columns, _ = label_columns(targets, total.shape[0])
        positive = total.new_zeros(total.shape).index_add_(0, columns, positive)
    return torch.stack([positive, total - positive])


EQUALIZED_FOCAL = sigmoid_focal_kernels(statistics=_class_gradient_parts,
                                        summarize=_class_gradient_totals)


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
            of |dL/dx| over positive and negative entries (what EFL accumulates); computed
            in the same pass as the loss, at no extra read of the logits.
    """
    gamma_b = check_gamma(gamma_b, 'gamma_b', strictly_positive=True)
    if class_gamma.shape != inputs.shape[-1:]:
        raise ValueError(f'class_gamma must have shape ({inputs.shape[-1]},) for logits '
                         f'{tuple(inputs.shape)}, got {tuple(class_gamma.shape)}')
    class_gamma = class_gamma.detach().to(device=inputs.device, dtype=compute_dtype(inputs))
    return generalized_sigmoid_focal_loss(inputs, targets, alpha, class_gamma, 0.0, reduction,
                                          weight, class_gamma / gamma_b, 0.0,
                                          kernels=EQUALIZED_FOCAL,
                                          on_backward=on_gradient_totals,
                                          normalizer=normalizer)
