"""``HardNegativeSampler``: SSD hard negative mining, soft negative mining and OHEM for dense
heads, and the contract between such a sampler and its head.

mmdet samples per image, from priors alone. Ranking by loss needs the head's scores, so the
sampler works in two steps: during target assignment it keeps every positive and negative
(as ``PseudoSampler`` does); then the head hands it the whole batch at once.

The head-sampler contract (:class:`LossRankedSampler`), the only way the two know each other:

* The head declares ``ranks_anchors_with_sampler = True``; mmdet builds the sampler with
  ``context=head`` and the sampler refuses, at build time, a head without it (a stock head
  would silently train on every anchor).
* Each step, the head computes its classification loss per anchor, detached, and calls
  ``weights = sampler.select(losses, labels, label_weights, anchors, num_classes)`` with
  (B, A) tensors (anchors (B, A, 4)).
* ``weights`` is (B, A) float in [0, 1]: the head multiplies its ``label_weights`` by it
  (anchors of weight 0 leave the classification loss) and normalizes by the positives that
  kept a weight, as mmdet normalizes by positives.
"""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models.task_modules.samplers import PseudoSampler
from mmdet.registry import TASK_UTILS
from torch import Tensor

from ..ops import hard_negative_mask, ohem_mask, soft_negative_weights

__all__ = ['LossRankedSampler', 'HardNegativeSampler']

MODES = ('hard_negative', 'soft', 'ohem')


class LossRankedSampler(PseudoSampler):
    """A sampler that weights anchors by their classification loss (the contract above).

    Args:
        context: the head building the sampler (mmdet passes it); it must declare
            ``ranks_anchors_with_sampler = True`` and call :meth:`select`.
    """

    def __init__(self, context: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if context is not None and not getattr(context, 'ranks_anchors_with_sampler', False):
            raise TypeError(
                f'{type(self).__name__} ranks anchors by classification loss, but '
                f'{type(context).__name__} hands its sampler no scores to rank. Use the plugin '
                f"head instead: type='MiningRetinaHead' for RetinaHead, type='MiningSSDHead' "
                f'for SSDHead.')

    def select(self, losses: Tensor, labels: Tensor, label_weights: Tensor, anchors: Tensor,
               num_classes: int) -> Tensor:
        """Per-anchor weights in [0, 1] of the classification loss.

        Args:
            losses: (B, A) per-anchor classification loss, detached.
            labels: (B, A) class indices, ``num_classes`` = background.
            label_weights: (B, A); anchors with weight 0 (ignored) must get weight 0.
            anchors: (B, A, 4) anchors (x1, y1, x2, y2).
            num_classes: C.

        Returns:
            (B, A) float weights; 0 takes an anchor out of the loss.
        """
        raise NotImplementedError


@TASK_UTILS.register_module()
class HardNegativeSampler(LossRankedSampler):
    """Weight anchors by their classification loss: hard, soft or OHEM mining.

    Args:
        neg_pos_ratio: negatives per positive (> 0): kept ('hard_negative'), spent as soft
            weights ('soft'), or at most per kept positive ('ohem', where None means no ratio).
        min_neg_per_image: negatives kept even in images with few or no objects (>= 0), so
            that images without objects still teach background.
        mode: 'hard_negative' (all positives + the hardest negatives, SSD), 'soft' (all
            positives + every negative weighted by its loss rank, the same budget; see
            :func:`plugin.ops.soft_negative_weights`) or 'ohem' (top ``batch_size`` examples by
            loss after NMS, the focal-loss paper's Table 1d).
        temperature: 'soft' mode only: width of the soft edge in budgets (>= 0; 0 is
            'hard_negative', large values spread the budget evenly over all negatives).
            Default 1.
        batch_size: examples per image in 'ohem' mode (>= 1).
        nms_thr: IoU threshold of the NMS over anchors in 'ohem' mode, in (0, 1].
        context: the head building the sampler (see :class:`LossRankedSampler`).
    """

    def __init__(self, neg_pos_ratio: float | None = 3.0, min_neg_per_image: int = 0,
                 mode: str = 'hard_negative', temperature: float | None = None,
                 batch_size: int = 256, nms_thr: float = 0.7, context: Any = None,
                 **kwargs: Any) -> None:
        if mode not in MODES:
            raise ValueError(f'HardNegativeSampler: mode={mode!r}; allowed: {MODES}')
        if neg_pos_ratio is None and mode != 'ohem':
            raise ValueError("HardNegativeSampler: neg_pos_ratio=None is only allowed with "
                             "mode='ohem'; give a number > 0")
        if neg_pos_ratio is not None and not neg_pos_ratio > 0:
            raise ValueError(f'HardNegativeSampler: neg_pos_ratio={neg_pos_ratio}; allowed: '
                             f'a number > 0' + (" or None (mode='ohem')" if mode == 'ohem' else ''))
        if not isinstance(min_neg_per_image, int) or min_neg_per_image < 0:
            raise ValueError(f'HardNegativeSampler: min_neg_per_image={min_neg_per_image!r}; '
                             f'allowed: an int >= 0')
        if temperature is not None and mode != 'soft':
            raise ValueError(f"HardNegativeSampler: temperature={temperature} applies to "
                             f"mode='soft' only; got mode={mode!r}")
        if temperature is not None and not temperature >= 0:
            raise ValueError(f'HardNegativeSampler: temperature={temperature}; allowed: a '
                             f'number >= 0 (0: hard mining; inf: uniform)')
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'HardNegativeSampler: batch_size={batch_size!r}; allowed: an int '
                             f'>= 1')
        if not 0 < nms_thr <= 1:
            raise ValueError(f'HardNegativeSampler: nms_thr={nms_thr}; allowed: (0, 1]')
        super().__init__(context=context, **kwargs)
        self.neg_pos_ratio = neg_pos_ratio
        self.min_neg_per_image = min_neg_per_image
        self.mode = mode
        self.temperature = 1.0 if temperature is None else float(temperature)
        self.batch_size = batch_size
        self.nms_thr = float(nms_thr)

    @torch.no_grad()
    def select(self, losses: Tensor, labels: Tensor, label_weights: Tensor, anchors: Tensor,
               num_classes: int) -> Tensor:
        candidate = label_weights > 0
        positive = candidate & (labels >= 0) & (labels < num_classes)
        if self.mode == 'ohem':
            return ohem_mask(losses, anchors, positive, candidate, self.batch_size,
                             self.nms_thr, self.neg_pos_ratio, self.min_neg_per_image
                             ).to(label_weights.dtype)
        if self.mode == 'soft':
            weights = soft_negative_weights(losses, positive, candidate & ~positive,
                                            self.neg_pos_ratio, self.temperature,
                                            self.min_neg_per_image)
            return weights.masked_fill_(positive, 1).to(label_weights.dtype)
        negatives = hard_negative_mask(losses, positive, candidate & ~positive,
                                       self.neg_pos_ratio, self.min_neg_per_image)
        return (positive | negatives).to(label_weights.dtype)
