"""MMDetection loss modules over :mod:`plugin.ops`: argument checks and mmdet conventions.

mmdet calls ``loss(pred, target, weight=None, avg_factor=None, reduction_override=None)``
with ``target`` either class indices (N,) where ``num_classes`` means background, or a
one-hot / soft (N, C) tensor; ``weight`` is per anchor (N,) or per element; with
``avg_factor`` a 'mean' is ``sum / (avg_factor + eps)``. That translation happens here, once.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..ops import (REDUCTIONS, DRLossParams, EqualizedFocalParams, FocalStarParams,
                   Poly1FocalParams, SigmoidFocalParams, SoftmaxFocalParams, check_alpha,
                   check_reduction, dr_loss, equalized_focal_gammas, equalized_focal_loss,
                   focal_loss_star, poly1_focal_loss, sigmoid_focal_loss, softmax_focal_loss,
                   upcast)

__all__ = ['SigmoidFocalLoss', 'SoftmaxFocalLoss', 'FocalLossStar', 'PolyFocalLoss',
           'EqualizedFocalLoss', 'DRLoss']

# mmdet's weight_reduce_loss adds this to avg_factor; kept for identical numbers.
_AVG_EPS = torch.finfo(torch.float32).eps


class _MMDetLoss(nn.Module):
    """The mmdet call convention around a core loss ``self._loss(pred, target, weight, red)``."""

    use_sigmoid = True

    def __init__(self, use_sigmoid: bool, reduction: str, loss_weight: float) -> None:
        super().__init__()
        if bool(use_sigmoid) != self.use_sigmoid:
            other = 'SoftmaxFocalLoss' if self.use_sigmoid else 'SigmoidFocalLoss'
            raise ValueError(f'{type(self).__name__} has use_sigmoid={self.use_sigmoid}; got '
                             f'use_sigmoid={use_sigmoid}: use {other} instead')
        self.reduction = check_reduction(reduction)
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        if reduction_override not in (None,) + REDUCTIONS:
            raise ValueError(f'reduction_override={reduction_override!r}; allowed: None, '
                             f'{REDUCTIONS}')
        reduction = reduction_override or self.reduction
        if avg_factor is not None and reduction == 'sum':
            raise ValueError('avg_factor can not be used with reduction="sum"')
        if target.dim() == pred.dim() and not target.dtype.is_floating_point:
            target = target.to(pred.dtype)  # an integer one-hot, not class indices
        if weight is not None and weight.shape != pred.shape[:weight.dim()] \
                and weight.numel() == pred.numel():
            weight = weight.reshape(pred.shape)
        if avg_factor is not None and reduction == 'mean':  # the sum over avg_factor, fused
            loss = self._loss(pred, target, weight, 'sum', avg_factor + _AVG_EPS)
        else:
            loss = self._loss(pred, target, weight, reduction, None)
        # An unreduced loss is full-size: no pass over it for the usual weight of 1.
        return loss if self.loss_weight == 1.0 else self.loss_weight * loss

    def _loss(self, pred: Tensor, target: Tensor, weight: Tensor | None, reduction: str,
              normalizer: float | Tensor | None) -> Tensor:
        raise NotImplementedError


def _logits_of(probabilities: Tensor) -> Tensor:
    """log(p / (1 - p)) in float32 or wider, finite (and with a finite gradient) at p = 0 and
    p = 1: each log is floored at that of the smallest normal float (about -87 in float32;
    mmdet's binary cross entropy floors it at -100)."""
    p = upcast(probabilities)
    tiny = torch.finfo(p.dtype).tiny
    return torch.log(p.clamp(min=tiny)) - torch.log((1 - p).clamp(min=tiny))


@MODELS.register_module()
class SigmoidFocalLoss(_MMDetLoss):
    """Sigmoid focal loss; a drop-in for mmdet's ``FocalLoss`` (see
    :func:`plugin.ops.sigmoid_focal_loss`).

    Args:
        gamma: focusing parameter >= 0 (0: alpha-balanced cross entropy).
        alpha: float in [0, 1], a per-class list of length C, or None (no balancing).
        label_smoothing: eps in [0, 1); binary targets become t (1 - eps) + eps / 2.
        reduction: 'none', 'mean' or 'sum'. loss_weight: multiplier.
        use_sigmoid: must be True (accepted so that configs merged over ``FocalLoss`` work).
        activated: as mmdet's ``FocalLoss``: the inputs are probabilities in [0, 1] (a head
            that applies the sigmoid itself, e.g. TOOD), not logits.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = 0.25,
                 label_smoothing: float = 0.0, reduction: str = 'mean',
                 loss_weight: float = 1.0, use_sigmoid: bool = True,
                 activated: bool = False) -> None:
        super().__init__(use_sigmoid, reduction, loss_weight)
        self.params = SigmoidFocalParams(alpha=alpha, gamma=gamma,
                                         label_smoothing=label_smoothing)
        if not isinstance(activated, bool):
            raise TypeError(f'activated={activated!r}; allowed: True (inputs are '
                            f'probabilities) or False (logits)')
        self.activated = activated

    def _loss(self, pred, target, weight, reduction, normalizer):
        if self.activated:
            if pred.numel() and not bool(((pred >= 0) & (pred <= 1)).all()):
                raise ValueError('SigmoidFocalLoss(activated=True) takes probabilities in '
                                 '[0, 1]; got values outside (use activated=False for logits)')
            # The same loss of the same probabilities, through the one fused kernel.
            pred = _logits_of(pred)
        return sigmoid_focal_loss(pred, target, reduction=reduction, weight=weight,
                                  normalizer=normalizer, **self.params.kwargs())


@MODELS.register_module()
class SoftmaxFocalLoss(_MMDetLoss):
    """Softmax focal loss over C + 1 outputs, background last (heads with
    ``use_sigmoid=False``); see :func:`plugin.ops.softmax_focal_loss`.

    Args:
        gamma: focusing parameter >= 0 (0: softmax cross entropy, alpha-weighted).
        alpha: float in [0, 1] (alpha for classes, 1 - alpha for background), a list of
            C + 1 per-output weights in [0, 1], or None.
        reduction, loss_weight: as usual. use_sigmoid: must be False.
    """

    use_sigmoid = False

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = 0.25,
                 reduction: str = 'mean', loss_weight: float = 1.0,
                 use_sigmoid: bool = False) -> None:
        super().__init__(use_sigmoid, reduction, loss_weight)
        self.params = SoftmaxFocalParams(alpha=alpha, gamma=gamma)

    def _loss(self, pred, target, weight, reduction, normalizer):
        return softmax_focal_loss(pred, target, reduction=reduction, weight=weight,
                                  normalizer=normalizer, **self.params.kwargs())


@MODELS.register_module()
class FocalLossStar(_MMDetLoss):
    """FL* from the focal-loss paper's appendix: -alpha_t log(sigmoid(gamma x_t + beta)) / gamma.

    Args:
        gamma: > 0. beta: shift. alpha: as :class:`SigmoidFocalLoss`.
    """

    def __init__(self, gamma: float = 2.0, beta: float = 1.0,
                 alpha: float | Sequence[float] | None = 0.25, reduction: str = 'mean',
                 loss_weight: float = 1.0, use_sigmoid: bool = True) -> None:
        super().__init__(use_sigmoid, reduction, loss_weight)
        self.params = FocalStarParams(alpha=alpha, gamma=gamma, beta=beta)

    def _loss(self, pred, target, weight, reduction, normalizer):
        return focal_loss_star(pred, target, reduction=reduction, weight=weight,
                               normalizer=normalizer, **self.params.kwargs())


@MODELS.register_module()
class PolyFocalLoss(_MMDetLoss):
    """Poly-1 focal loss: focal loss + epsilon (1 - p_t)^(gamma + 1).

    Args:
        gamma, alpha: as :class:`SigmoidFocalLoss`. epsilon: the poly-1 coefficient.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = 0.25,
                 epsilon: float = 1.0, reduction: str = 'mean', loss_weight: float = 1.0,
                 use_sigmoid: bool = True) -> None:
        super().__init__(use_sigmoid, reduction, loss_weight)
        self.params = Poly1FocalParams(alpha=alpha, gamma=gamma, epsilon=epsilon)

    def _loss(self, pred, target, weight, reduction, normalizer):
        return poly1_focal_loss(pred, target, reduction=reduction, weight=weight,
                                normalizer=normalizer, **self.params.kwargs())


@MODELS.register_module()
class EqualizedFocalLoss(_MMDetLoss):
    """Equalized focal loss (EFL) with per-class focusing from gradient statistics.

    The accumulated positive / negative gradient magnitudes per class are buffers
    (``pos_grad``, ``neg_grad``): saved in checkpoints and, in distributed training, summed
    over processes at every update so that all replicas share them.

    Args:
        num_classes: C, the classifier's output count.
        gamma_b: base focusing parameter (> 0). scale_factor: s >= 0.
        alpha: as :class:`SigmoidFocalLoss`.
    """

    def __init__(self, num_classes: int, gamma_b: float = 2.0, scale_factor: float = 8.0,
                 alpha: float | Sequence[float] | None = 0.25, reduction: str = 'mean',
                 loss_weight: float = 1.0, use_sigmoid: bool = True) -> None:
        super().__init__(use_sigmoid, reduction, loss_weight)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes={num_classes!r}; allowed: an int >= 1')
        self.num_classes = num_classes
        self.params = EqualizedFocalParams(gamma_b=gamma_b, scale_factor=scale_factor,
                                           alpha=check_alpha(alpha, num_classes))
        self.register_buffer('pos_grad', torch.zeros(num_classes))
        self.register_buffer('neg_grad', torch.zeros(num_classes))

    def class_gammas(self) -> Tensor:
        """Current per-class focusing parameters gamma_j, shape (C,)."""
        return equalized_focal_gammas(self.pos_grad, self.neg_grad, self.params.gamma_b,
                                      self.params.scale_factor)

    def _loss(self, pred, target, weight, reduction, normalizer):
        if pred.shape[-1] != self.num_classes:
            hint = (' (mmdet heads read use_sigmoid from the loss_cls config: add '
                    'use_sigmoid=True to it)' if pred.shape[-1] == self.num_classes + 1 else '')
            raise ValueError(f'EqualizedFocalLoss(num_classes={self.num_classes}) got logits '
                             f'with {pred.shape[-1]} outputs; set num_classes to match the '
                             f'head{hint}')
        return equalized_focal_loss(pred, target, self.class_gammas(),
                                    gamma_b=self.params.gamma_b, alpha=self.params.alpha,
                                    reduction=reduction, weight=weight, normalizer=normalizer,
                                    on_gradient_totals=self._accumulate if self.training else None)

    @torch.no_grad()
    def _accumulate(self, totals: Tensor) -> None:
        """Add one backward's (2, C) positive/negative gradient totals, summed over ranks."""
        totals = totals.to(self.pos_grad.dtype)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        self.pos_grad += totals[0]
        self.neg_grad += totals[1]


@MODELS.register_module()
class DRLoss(nn.Module):
    """DR loss (Qian et al., 2020), a ranking of positives above negatives within an image;
    see :func:`plugin.ops.dr_loss`. Defaults are the paper's.

    What each head hands it:

    - ``MiningRetinaHead`` / ``MiningSSDHead`` with a ``PseudoSampler``: the whole batch in one
      call, (B, A, C) (``ranks_whole_batch``), so that ``grouping`` decides: 'image' ranks
      each image's anchors of all levels (the paper), 'batch' all of them at once (the
      authors' code).
    - mmdet's ``RetinaHead``: one FPN level of the whole batch per call, (B * A_level, C):
      one ranking per level over the batch, summed over levels (``grouping`` has no effect).
    - A loss-ranked sampler (``HardNegativeSampler``, OHEM) needs a loss per anchor, which a
      ranking loss has not: that combination raises a ``ValueError``.

    ``avg_factor`` (the positive count) is ignored: the loss is already one number per image
    and the paper divides it by nothing. ``label_weights`` of 0 (ignored anchors) leave the
    anchor out of both distributions; other weights count as multiplicities.

    Args:
        pos_lambda, neg_lambda: temperatures lambda+ and lambda- (> 0).
        margin: gamma. smoothness: L (> 0). scale: tau (>= 0).
        grouping: 'image' or 'batch' (see above).
        reduction: over the rankings: 'sum' (the paper's sum over images) or 'mean' (a loss
            that does not grow with the batch, as the authors' code, one ranking per GPU
            averaged over GPUs by data parallelism).
        loss_weight: multiplier on top of tau.
        use_sigmoid: must be True (sigmoid scores, C outputs); mmdet heads read it from the
            config dict, so configs must set it.
    """

    use_sigmoid = True
    # MiningRetinaHead / MiningSSDHead: pass the (B, A, C) batch in one call.
    ranks_whole_batch = True

    def __init__(self, pos_lambda: float = 1.0, neg_lambda: float = 0.1 / math.log(3.5),
                 margin: float = 0.5, smoothness: float = 6.0, scale: float = 4.0,
                 grouping: str = 'image', reduction: str = 'sum', loss_weight: float = 1.0,
                 use_sigmoid: bool = True) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError(f'DRLoss ranks sigmoid scores: use_sigmoid must be True, got '
                             f'{use_sigmoid!r}')
        self.params = DRLossParams(pos_lambda=pos_lambda, neg_lambda=neg_lambda,
                                   margin=margin, smoothness=smoothness, scale=scale,
                                   grouping=grouping)
        if reduction not in ('sum', 'mean'):
            raise ValueError(f"DRLoss reduction={reduction!r}; allowed: 'sum' or 'mean' "
                             f'(over the rankings, see grouping)')
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        if reduction_override == 'none':
            raise ValueError("DRLoss has no per-anchor loss (reduction_override='none'): it "
                             'ranks all anchors of an image together. Loss-ranked samplers '
                             '(HardNegativeSampler, OHEM) need one; use DRLoss with '
                             "train_cfg.sampler=dict(type='PseudoSampler')")
        if reduction_override not in (None, 'mean', 'sum'):
            raise ValueError(f'reduction_override={reduction_override!r}; allowed: None, '
                             f"'mean' or 'sum' (over the rankings)")
        if target.dtype.is_floating_point or target.dim() != pred.dim() - 1:
            raise ValueError(f'DRLoss takes class indices of shape {tuple(pred.shape[:-1])} '
                             f'(index C: background), got {tuple(target.shape)} {target.dtype}')
        if weight is not None and weight.shape != target.shape:
            raise ValueError(f'DRLoss takes a per-anchor weight {tuple(target.shape)}, got '
                             f'{tuple(weight.shape)}')
        return self.loss_weight * dr_loss(pred, target, weight,
                                          reduction=reduction_override or self.reduction,
                                          **self.params.kwargs())
