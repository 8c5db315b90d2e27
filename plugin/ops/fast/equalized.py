"""EFL's gradient statistics in the fused pass: per-class sums of |dL/dx| over positive and
negative entries, from the gradient the one-pass kernel has just computed (no second read of
the logits; timed by ``tools/benchmark_losses.py``). The readable version is in
:mod:`plugin.ops.equalized_focal`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .targets import at_columns, dense_targets, label_columns, upcast

__all__ = ['class_gradient_parts', 'class_gradient_totals']

_ROW_BLOCKS = 64


def _column_sums(values: Tensor) -> Tensor:
    """(N, C) -> (C,) sums over rows, taken in row blocks first: a compiled loop then runs in
    parallel over the blocks, not over a few strips of 16 columns."""
    head = values.shape[0] // _ROW_BLOCKS * _ROW_BLOCKS
    blocks = values[:head].reshape(_ROW_BLOCKS, -1, values.shape[-1]).sum(1)
    return blocks.sum(0) + values[head:].sum(0)


def class_gradient_parts(grad: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class sums of |grad| (C,), and what the positives add: per class (C,) for float
    targets; for class-index targets, |grad| at each row's label (N,), 0 for background."""
    g = upcast(grad).abs()
    total = _column_sums(g)
    if targets.dtype.is_floating_point:
        return total, _column_sums(g * dense_targets(targets, g))
    columns, positive = label_columns(targets, g.shape[-1])
    return total, torch.where(positive, at_columns(g, columns), 0.0)


def class_gradient_totals(parts: tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
    """(2, C): per-class sums of |grad| over positive and over negative entries; the positive
    entries of class-index targets are scattered here, eagerly (a compiled scatter contends
    on atomic adds)."""
    total, positive = parts
    if not targets.dtype.is_floating_point:
        columns, _ = label_columns(targets, total.shape[0])
        positive = total.new_zeros(total.shape).index_add_(0, columns, positive)
    return torch.stack([positive, total - positive])
