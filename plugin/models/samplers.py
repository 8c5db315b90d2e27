"""``HardNegativeSampler``: SSD-style hard negative mining and OHEM for any dense head.

mmdet samples per image, from priors alone. Ranking by loss needs the head's scores, so the
sampler works in two steps: during target assignment it keeps every positive and negative
(as ``PseudoSampler`` does); then the head hands it the whole batch of classification scores
and it selects, for all images at once, which anchors enter the loss (:meth:`select`).
"""
from __future__ import annotations

from typing import Any

import torch
from mmdet.models.task_modules.samplers import PseudoSampler
from mmdet.registry import TASK_UTILS
from torch import Tensor, nn

from ..ops import hard_negative_mask, ohem_mask

__all__ = ['HardNegativeSampler']

MODES = ('hard_negative', 'ohem')


@TASK_UTILS.register_module()
class HardNegativeSampler(PseudoSampler):
    """Select anchors by their classification loss.

    Args:
        neg_pos_ratio: negatives kept per positive (> 0). In 'ohem' mode None means no ratio.
        min_neg_per_image: negatives kept even in images with few or no objects (>= 0), so
            that images without objects still teach background.
        mode: 'hard_negative' (all positives + hardest negatives, SSD) or 'ohem' (top
            ``batch_size`` examples by loss after NMS, the focal-loss paper's Table 1d).
        batch_size: examples per image in 'ohem' mode (>= 1).
        nms_thr: IoU threshold of the NMS over anchors in 'ohem' mode, in (0, 1].
        context: the head building the sampler (mmdet passes it); it must hand its scores to
            :meth:`select`.
    """

    def __init__(self, neg_pos_ratio: float | None = 3.0, min_neg_per_image: int = 0,
                 mode: str = 'hard_negative', batch_size: int = 256, nms_thr: float = 0.7,
                 context: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'HardNegativeSampler: batch_size={batch_size!r}; allowed: an int '
                             f'>= 1')
        if not 0 < nms_thr <= 1:
            raise ValueError(f'HardNegativeSampler: nms_thr={nms_thr}; allowed: (0, 1]')
        if context is not None and not getattr(context, 'hands_scores_to_sampler', False):
            raise TypeError(
                f'HardNegativeSampler ranks anchors by classification loss, but '
                f'{type(context).__name__} hands its sampler no scores. Use the plugin head '
                f"instead: type='MiningRetinaHead' for RetinaHead, type='MiningSSDHead' for "
                f'SSDHead.')
        self.neg_pos_ratio = neg_pos_ratio
        self.min_neg_per_image = min_neg_per_image
        self.mode = mode
        self.batch_size = batch_size
        self.nms_thr = float(nms_thr)

    @torch.no_grad()
    def select(self, cls_scores: Tensor, labels: Tensor, label_weights: Tensor,
               anchors: Tensor, loss_cls: nn.Module, num_classes: int) -> Tensor:
        """Which anchors enter the loss.

        Args:
            cls_scores: (B, A, K) classification logits of the head (K = C or C + 1).
            labels: (B, A) class indices, ``num_classes`` = background.
            label_weights: (B, A); anchors with weight 0 (ignored) are never selected.
            anchors: (B, A, 4) anchors (x1, y1, x2, y2), for OHEM's NMS.
            loss_cls: the head's classification loss; it ranks the anchors.
            num_classes: C.

        Returns:
            (B, A) bool mask of selected anchors.
        """
        num_images, num_anchors = labels.shape
        losses = loss_cls(cls_scores.reshape(num_images * num_anchors, -1),
                          labels.reshape(-1), reduction_override='none')
        if losses.dim() == 2:  # sigmoid losses are per class
            losses = losses.sum(1)
        losses = losses.reshape(num_images, num_anchors)
        candidate = label_weights > 0
        positive = candidate & (labels >= 0) & (labels < num_classes)
        if self.mode == 'ohem':
            return ohem_mask(losses, anchors, positive, candidate, self.batch_size,
                             self.nms_thr, self.neg_pos_ratio, self.min_neg_per_image)
        negatives = hard_negative_mask(losses, positive, candidate & ~positive,
                                       self.neg_pos_ratio, self.min_neg_per_image)
        return positive | negatives
