"""Each loss family's parameters as one validated object, and the checks of a call's inputs.

Validation happens here only: the MMDetection adapters build these objects in their
``__init__`` (a bad config fails at build time) and the functions build them on every call.
Errors name the argument, its value and what is allowed.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

__all__ = ['SigmoidFocalParams', 'Poly1FocalParams', 'FocalStarParams', 'SoftmaxFocalParams',
           'EqualizedFocalParams', 'DRLossParams', 'DR_GROUPINGS', 'REDUCTIONS',
           'check_reduction', 'check_alpha', 'check_inputs', 'check_normalizer', 'Alpha']

REDUCTIONS = ('none', 'mean', 'sum')
Alpha = float | Sequence[float] | Tensor | None


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f'reduction={reduction!r} is not supported; allowed: {REDUCTIONS}')
    return reduction


def _number(value: float, name: str, *, positive: bool = False) -> float:
    value = float(value)
    if value < 0 or (positive and value == 0) or value != value:
        raise ValueError(f"{name}={value} is not allowed; {name} must be a number "
                         f"{'> 0' if positive else '>= 0'}")
    return value


def check_alpha(alpha: Alpha, num_classes: int | None = None,
                name: str = 'alpha') -> float | Tensor | None:
    """None, a float in [0, 1], or one value in [0, 1] per class (a float32 tensor)."""
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


def _alpha_or_none(alpha: Alpha) -> Alpha:
    """fvcore's and torchvision's convention: a negative alpha means no balancing."""
    return None if isinstance(alpha, (int, float)) and alpha < 0 else alpha


class _Params:
    """No defaults here: the functions' signatures hold them, once."""

    def kwargs(self) -> dict[str, Any]:
        """The parameters as keyword arguments of the loss function."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class SigmoidFocalParams(_Params):
    """alpha: float in [0, 1], per-class values, None or negative (none); gamma >= 0;
    label_smoothing in [0, 1): binary targets become t (1 - eps) + eps / 2."""
    alpha: Alpha
    gamma: float
    label_smoothing: float

    def __post_init__(self) -> None:
        object.__setattr__(self, 'alpha', check_alpha(_alpha_or_none(self.alpha)))
        object.__setattr__(self, 'gamma', _number(self.gamma, 'gamma'))
        smoothing = float(self.label_smoothing)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'label_smoothing={smoothing} is outside [0, 1)')
        object.__setattr__(self, 'label_smoothing', smoothing)


@dataclass(frozen=True)
class Poly1FocalParams(_Params):
    """alpha, gamma as :class:`SigmoidFocalParams`; epsilon: any float (Poly-1's weight of
    the leading polynomial term)."""
    alpha: Alpha
    gamma: float
    epsilon: float

    def __post_init__(self) -> None:
        object.__setattr__(self, 'alpha', check_alpha(self.alpha))
        object.__setattr__(self, 'gamma', _number(self.gamma, 'gamma'))
        epsilon = float(self.epsilon)
        if epsilon != epsilon:
            raise ValueError('epsilon must be a number, got nan')
        object.__setattr__(self, 'epsilon', epsilon)


@dataclass(frozen=True)
class FocalStarParams(_Params):
    """alpha as :class:`SigmoidFocalParams`; gamma > 0; beta: any float shift (fvcore's
    ``sigmoid_focal_loss_star`` has none: beta = 0)."""
    alpha: Alpha
    gamma: float
    beta: float

    def __post_init__(self) -> None:
        object.__setattr__(self, 'alpha', check_alpha(_alpha_or_none(self.alpha)))
        object.__setattr__(self, 'gamma', _number(self.gamma, 'gamma', positive=True))
        object.__setattr__(self, 'beta', float(self.beta))


@dataclass(frozen=True)
class SoftmaxFocalParams(_Params):
    """alpha: float (alpha for classes, 1 - alpha for background), C + 1 per-output values,
    or None; gamma >= 0."""
    alpha: Alpha
    gamma: float

    def __post_init__(self) -> None:
        object.__setattr__(self, 'alpha', check_alpha(self.alpha))
        object.__setattr__(self, 'gamma', _number(self.gamma, 'gamma'))


@dataclass(frozen=True)
class EqualizedFocalParams(_Params):
    """gamma_b > 0: base focusing; alpha as :class:`SigmoidFocalParams`; scale_factor >= 0:
    s in gamma_j = gamma_b + s (1 - g_j) (None where the caller computes gamma_j itself)."""
    gamma_b: float
    alpha: Alpha
    scale_factor: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, 'gamma_b', _number(self.gamma_b, 'gamma_b', positive=True))
        object.__setattr__(self, 'alpha', check_alpha(self.alpha))
        if self.scale_factor is not None:
            object.__setattr__(self, 'scale_factor',
                               _number(self.scale_factor, 'scale_factor'))


def check_normalizer(normalizer: float | Tensor | None, reduction: str) -> None:
    if normalizer is None:
        return
    if reduction != 'sum':
        raise ValueError(f"normalizer divides a sum: it needs reduction='sum', got "
                         f'reduction={reduction!r}')
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f'normalizer must be a number or a one-element tensor, got '
                             f'shape {tuple(normalizer.shape)}')
    elif not normalizer > 0:
        raise ValueError(f'normalizer must be > 0, got {normalizer}')


def check_inputs(logits: Tensor, targets: Tensor, weight: Tensor | None, *, max_label: int,
                 reduction: str, normalizer: float | Tensor | None = None) -> None:
    """Shapes, label range, reduction and normalizer, with errors that name the argument.

    Integer ``targets`` are class indices in [0, max_label], their values checked on CPU only
    (on a GPU the check would synchronize every step); float targets match ``logits``.
    """
    check_reduction(reduction)
    check_normalizer(normalizer, reduction)
    if not logits.dtype.is_floating_point:
        raise TypeError(f'logits must be a floating tensor, got dtype {logits.dtype}')
    if targets.dtype.is_floating_point:
        if targets.shape != logits.shape:
            raise ValueError(f'float (one-hot or soft) targets must match logits: targets '
                             f'{tuple(targets.shape)} vs logits {tuple(logits.shape)}')
    else:
        _check_labels(logits, targets, max_label)
    if weight is not None and (weight.dim() > logits.dim()
                               or weight.shape != logits.shape[:weight.dim()]):
        raise ValueError(f'weight of shape {tuple(weight.shape)} does not fit logits '
                         f'{tuple(logits.shape)}; allowed: per-row {tuple(logits.shape[:1])} '
                         f'or per-element {tuple(logits.shape)}')


def _check_labels(logits: Tensor, labels: Tensor, max_label: int) -> None:
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f'class-index targets must have shape {tuple(logits.shape[:-1])} '
                         f'for logits {tuple(logits.shape)}, got {tuple(labels.shape)}')
    checked = labels.numel() and labels.device.type == 'cpu'
    low, high = torch.stack(torch.aminmax(labels)).tolist() if checked else (0, 0)
    if low < 0 or high > max_label:
        background = ('the last output' if max_label == logits.shape[-1] - 1
                      else f'{max_label}, for a classifier without a background output')
        raise ValueError(f'labels must lie in [0, {max_label}] (background = {background}), '
                         f'got min {low}, max {high}')


@dataclass(frozen=True)
class DRLossParams(_Params):
    """DR loss (Qian et al., 2020): pos_lambda, neg_lambda > 0: temperatures of the
    distributions over positives and negatives; margin: gamma, any float; smoothness: L > 0 of
    the logistic loss; scale: tau >= 0; grouping: 'image' or 'batch'."""
    pos_lambda: float
    neg_lambda: float
    margin: float
    smoothness: float
    scale: float
    grouping: str

    def __post_init__(self) -> None:
        for name in ('pos_lambda', 'neg_lambda', 'smoothness'):
            object.__setattr__(self, name, _number(getattr(self, name), name, positive=True))
        object.__setattr__(self, 'scale', _number(self.scale, 'scale'))
        margin = float(self.margin)
        if margin != margin:
            raise ValueError('margin must be a number, got nan')
        object.__setattr__(self, 'margin', margin)
        if self.grouping not in DR_GROUPINGS:
            raise ValueError(f'grouping={self.grouping!r} is not supported; allowed: '
                             f'{DR_GROUPINGS}')


# 'image': one ranking per image (the paper's sum over images); 'batch': one ranking over
# every image the call holds (the authors' released code).
DR_GROUPINGS = ('image', 'batch')
