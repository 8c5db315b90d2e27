"""Targets, shared by the readable formulas and the kernels: class indices used as they are
(never a one-hot copy), label smoothing, and the alpha weight of each target.

Why: a detection head passes class indices (N,); a one-hot (N, C) float would be one
more full-size read per pass. In a compiled loop the index comparison fuses into the loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['compute_dtype', 'upcast', 'dense_targets', 'class_mask', 'label_columns',
           'at_columns', 'broadcast_left', 'smoothed_targets', 'alpha_t']


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float16/bfloat16 logits are computed in float32; float32/float64 stay as they are."""
    return logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32


def upcast(logits: Tensor) -> Tensor:
    """The logits in :func:`compute_dtype` (inside a compiled kernel, a per-element cast)."""
    return logits.to(compute_dtype(logits))


def dense_targets(targets: Tensor, logits: Tensor) -> Tensor:
    """Float targets shaped like ``logits`` (N, C). Integer ``targets`` (N,) are class
    indices; index C (or any value outside [0, C)) is a row of zeros (background)."""
    if targets.dtype.is_floating_point:
        return targets.to(logits.dtype)
    return class_mask(targets, logits).to(logits.dtype)


def class_mask(labels: Tensor, logits: Tensor) -> Tensor:
    """Bool (N, C): entry (i, c) is labels[i] == c."""
    classes = torch.arange(logits.shape[-1], device=logits.device, dtype=labels.dtype)
    return labels.unsqueeze(-1) == classes


def label_columns(labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """For class-index labels (N,) (any value outside [0, C) is background): each row's label
    column, clamped into [0, C) so that it can be gathered, and whether the row has one."""
    return labels.clamp(0, num_classes - 1), (labels >= 0) & (labels < num_classes)


def at_columns(values: Tensor, columns: Tensor) -> Tensor:
    """Entries (N,) of ``values`` (N, C) at ``columns`` (N,); dimensions of size 1 broadcast."""
    if values.shape[-1] == 1:  # one value for every column
        return values[..., 0].expand(columns.shape)
    rows = values.expand(columns.shape[0], -1)
    return rows.gather(-1, columns.unsqueeze(-1)).squeeze(-1)


def broadcast_left(weight: Tensor, like: Tensor) -> Tensor:
    """View a (N,) or (N, C) weight so that it broadcasts over ``like`` from the left."""
    return weight.reshape(weight.shape + (1,) * (like.dim() - weight.dim())).to(like.dtype)


def smoothed_targets(t: Tensor, label_smoothing: float) -> Tensor:
    """Binary label smoothing: targets t (N, C) in [0, 1] become t (1 - eps) + eps / 2."""
    return t * (1 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else t


def alpha_t(t: Tensor, alpha: float | Tensor | None) -> Tensor | float:
    """alpha for positives, 1 - alpha for negatives, mixed linearly for soft targets; ``t`` is
    a bool mask or float targets (N, C), ``alpha`` a float, a (C,) tensor or None (1)."""
    if alpha is None:
        return 1.0
    if t.dtype == torch.bool:
        return torch.where(t, alpha, 1 - alpha)
    return alpha * t + (1 - alpha) * (1 - t)
