"""Target encoding inside the kernels: class indices used as they are, never a one-hot copy.

What it buys: a detection head passes class indices (N,); a one-hot (N, C) float would be one
more full-size read per pass. In a compiled loop the index comparison fuses into the loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['compute_dtype', 'upcast', 'dense_targets', 'class_mask', 'label_columns',
           'at_columns', 'broadcast_left']


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
