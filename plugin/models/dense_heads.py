"""Dense heads that hand their classification scores to the sampler.

Both heads compute their losses over the whole batch at once: targets, then (if the sampler
ranks anchors by loss) the sampler's weights, then the normalizer, then the two losses. The
contract with the sampler is written in :mod:`plugin.models.samplers`.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from mmdet.models.dense_heads import RetinaHead, SSDHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from mmdet.utils import ConfigType, InstanceList, OptInstanceList
from mmengine.model import bias_init_with_prob
from torch import Tensor, nn

from ..ops import RowGather
from .samplers import LossRankedSampler

__all__ = ['MiningRetinaHead', 'MiningSSDHead']


def _levels_to_batch(maps: list[Tensor], channels: int) -> Tensor:
    """[(B, a * channels, H, W)] per level -> (B, A, channels), anchors in mmdet's order."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps], 1)


def _sum_parts(losses: Tensor, part: Tensor, num_parts: int, avg_factor: float) -> list[Tensor]:
    """Per-row (R,) or per-entry (R, K) losses summed into ``num_parts`` parts, / avg_factor."""
    if losses.dim() == 0:  # a loss that ignores reduction_override (mmdet's GHMC): one part
        return [losses]
    rows = losses.sum(1) if losses.dim() == 2 else losses
    return list((rows.new_zeros(num_parts).index_add(0, part, rows) / avg_factor).unbind())


@functools.cache
def _takes_weight_optionally(loss_type: type) -> bool:
    """Whether ``loss(pred, target, reduction_override=...)`` may leave out the weight."""
    parameters = list(inspect.signature(loss_type.forward).parameters.values())
    return len(parameters) < 4 or parameters[3].default is not inspect.Parameter.empty


class _BatchedLossMixin:
    """``loss_by_feat`` over the concatenated batch, with the sampler's loss-ranked weights.

    Args (keyword, besides the stock head's):
        sync_avg_factor: in distributed training, normalize by the positives of all processes
            (their mean, as mmdet's newer heads do), so that N processes with batch B train as
            one process with batch N x B. False: each process by its own positives, as mmdet's
            ``RetinaHead`` and ``SSDHead``. Default True; one process is unaffected.
    """

    # The head side of the contract in plugin.models.samplers (LossRankedSampler).
    ranks_anchors_with_sampler = True
    # How the stock head lists its losses: 'level' (RetinaHead) or 'image' (SSDHead).
    loss_parts: str

    def __init__(self, *args: Any, sync_avg_factor: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_avg_factor = bool(sync_avg_factor)

    @functools.cached_property
    def _row_gathers(self) -> dict[str, RowGather]:
        """Gathers of the selected rows whose backward recycles its dense gradient."""
        return dict(cls_score=RowGather(), bbox_pred=RowGather())

    def loss_by_feat(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                     batch_gt_instances: InstanceList, batch_img_metas: list[dict],
                     batch_gt_instances_ignore: OptInstanceList = None
                     ) -> dict[str, list[Tensor]]:
        featmap_sizes = [score.shape[-2:] for score in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(
            featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        labels, label_weights, bbox_targets, bbox_weights, avg_factor = self.get_targets(
            anchor_list, valid_flag_list, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore=batch_gt_instances_ignore)
        return self.loss_by_batch(
            _levels_to_batch(cls_scores, self.cls_out_channels),
            _levels_to_batch(bbox_preds, self.bbox_coder.encode_size),
            torch.stack([get_box_tensor(cat_boxes(a)) for a in anchor_list]),
            torch.cat(labels, 1), torch.cat(label_weights, 1), torch.cat(bbox_targets, 1),
            torch.cat(bbox_weights, 1), avg_factor,
            level_sizes=[level.shape[1] for level in labels])

    def anchor_losses(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor) -> Tensor:
        """(B, A) classification loss per anchor (summed over classes), detached: what the
        sampler ranks. cls_score (B, A, K); labels, label_weights (B, A)."""
        scores, targets = cls_score.detach().flatten(0, 1), labels.flatten()
        with torch.no_grad():
            if _takes_weight_optionally(type(self.loss_cls)):
                # Per-anchor weights applied to the per-anchor sums: the same numbers without
                # a weighted full-size 'none' loss (benchmark_mining, RetinaNet size: 64 MiB).
                losses = self.loss_cls(scores, targets, reduction_override='none')
            else:  # e.g. mmdet's GHMC, whose label_weight is required
                ones = torch.ones_like(targets, dtype=scores.dtype)
                losses = self.loss_cls(scores, targets, ones, reduction_override='none')
        losses = losses.sum(1) if losses.dim() == 2 else losses
        return losses.reshape(labels.shape) * label_weights

    def loss_by_batch(self, cls_score: Tensor, bbox_pred: Tensor, anchors: Tensor,
                      labels: Tensor, label_weights: Tensor, bbox_targets: Tensor,
                      bbox_weights: Tensor, avg_factor: float,
                      level_sizes: list[int] | None = None) -> dict[str, list[Tensor]]:
        """Losses from batched targets: cls_score (B, A, K), bbox_pred (B, A, D),
        anchors (B, A, 4), labels / label_weights (B, A), bbox_targets / weights (B, A, D);
        ``level_sizes``: anchors per level (one level if None).

        Returns the stock head's structure: each loss as a list of scalars, one per level
        (``MiningRetinaHead``) or per image (``MiningSSDHead``), all over one normalizer.
        """
        num_images, num_anchors = labels.shape
        level_sizes = level_sizes or [num_anchors]
        num_parts = num_images if self.loss_parts == 'image' else len(level_sizes)
        if isinstance(self.sampler, LossRankedSampler):
            weights = self.sampler.select(self.anchor_losses(cls_score, labels, label_weights),
                                          labels, label_weights, anchors, self.num_classes)
            # Only rows of nonzero weight enter the losses, and their backward writes those only.
            rows = weights.flatten().nonzero().squeeze(1)
            labels = labels.flatten()[rows]
            positive_rows = rows[labels < self.num_classes]
            # mmdet's normalizer: the kept positives of each image, at least 1 each.
            kept_pos = torch.bincount(positive_rows // num_anchors, minlength=num_images)
            avg_factor = self._normalizer(float(kept_pos.clamp(min=1).sum()), labels.device)
            row_losses = self.loss_cls(
                self._row_gathers['cls_score'](cls_score.flatten(0, 1), rows), labels,
                label_weights.flatten()[rows] * weights.flatten()[rows],
                reduction_override='none')
            loss_cls = _sum_parts(row_losses, self._parts(rows, num_anchors, level_sizes),
                                  num_parts, avg_factor)
        else:
            positive_rows = (labels.flatten() < self.num_classes).nonzero().squeeze(1)
            avg_factor = self._normalizer(avg_factor, labels.device)
            loss_cls = self._dense_loss_cls(cls_score, labels, label_weights, level_sizes,
                                            avg_factor)
        # The box loss only sees positives (every other row has zero weight).
        bbox_pred = self._row_gathers['bbox_pred'](bbox_pred.flatten(0, 1), positive_rows)
        anchors, bbox_targets, bbox_weights = (t.flatten(0, 1)[positive_rows]
                                               for t in (anchors, bbox_targets, bbox_weights))
        if self.reg_decoded_bbox:
            bbox_pred = get_box_tensor(self.bbox_coder.decode(anchors, bbox_pred))
        box_losses = self.loss_bbox(bbox_pred, bbox_targets, bbox_weights,
                                    reduction_override='none')
        loss_bbox = _sum_parts(box_losses, self._parts(positive_rows, num_anchors, level_sizes),
                               num_parts, avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    def _parts(self, rows: Tensor, num_anchors: int, level_sizes: list[int]) -> Tensor:
        """The list entry each row of the flattened (B * A) batch adds its loss to."""
        if self.loss_parts == 'image':
            return rows // num_anchors
        ends = torch.tensor(level_sizes, device=rows.device).cumsum(0)
        return torch.bucketize(rows % num_anchors, ends, right=True)

    def _dense_loss_cls(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor,
                        level_sizes: list[int], avg_factor: float) -> list[Tensor]:
        """Every anchor in the loss: one fused call per part (an image's rows are
        contiguous; a level's are copied out of each image), or, for a loss that ranks
        anchors against each other (``ranks_whole_batch``, e.g. DRLoss), one call on the
        whole (B, A, K) batch, its one entry standing for all parts."""
        if getattr(self.loss_cls, 'ranks_whole_batch', False):
            return [self.loss_cls(cls_score, labels, label_weights, avg_factor=avg_factor)]
        if self.loss_parts == 'image':
            chunks = zip(cls_score.unbind(), labels.unbind(), label_weights.unbind())
        else:
            bounds = torch.tensor([0] + level_sizes).cumsum(0)
            chunks = ((t[:, start:end].flatten(0, 1) for t in (cls_score, labels, label_weights))
                      for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()))
        return [self.loss_cls(*chunk, avg_factor=avg_factor) for chunk in chunks]

    def _normalizer(self, avg_factor: float, device: torch.device) -> float:
        """The positive count to divide by: averaged over processes (``sync_avg_factor``) and
        at least 1, so that a batch without positives is not divided by ~0."""
        if (self.sync_avg_factor and torch.distributed.is_available()
                and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            total = torch.tensor(float(avg_factor), dtype=torch.float64, device=device)
            torch.distributed.all_reduce(total)
            avg_factor = float(total) / torch.distributed.get_world_size()
        return max(float(avg_factor), 1.0)


@MODELS.register_module()
class MiningRetinaHead(_BatchedLossMixin, RetinaHead):
    """RetinaHead whose sampler may rank anchors by loss (e.g. cross entropy + mining, the
    focal-loss paper's OHEM baselines). With a ``PseudoSampler`` it equals ``RetinaHead``.
    Losses are lists with one entry per level, as ``RetinaHead``'s."""

    loss_parts = 'level'


@MODELS.register_module()
class MiningSSDHead(_BatchedLossMixin, SSDHead):
    """SSDHead with a pluggable ``loss_cls`` / ``loss_bbox`` and mining by the sampler.

    With ``loss_cls`` softmax cross entropy (the default: ``SoftmaxFocalLoss`` with gamma=0 and
    no alpha, fused) and ``HardNegativeSampler(neg_pos_ratio=3)`` it reproduces mmdet's
    ``SSDHead`` losses; a sigmoid ``loss_cls`` (e.g. ``SigmoidFocalLoss``
    with ``PseudoSampler``) gives C outputs and trains on every anchor.

    Args:
        loss_cls: classification loss; its ``use_sigmoid`` sets the output count (C or C + 1).
            Default: softmax cross entropy.
        loss_bbox: box loss config; by default SmoothL1Loss with ``train_cfg.smoothl1_beta``
            (1.0 when absent), as mmdet's SSDHead.
        Other arguments as :class:`mmdet.models.dense_heads.SSDHead`.

    Losses are lists with one entry per image, as ``SSDHead``'s.
    """

    loss_parts = 'image'

    def __init__(self, *args: Any, loss_cls: ConfigType | None = None,
                 loss_bbox: ConfigType | None = None, **kwargs: Any) -> None:
        # SSDHead.__init__ calls _init_layers, which needs the loss to size the classifier.
        self._loss_cls_cfg = loss_cls or dict(type='SoftmaxFocalLoss', gamma=0.0, alpha=None,
                                              loss_weight=1.0)
        super().__init__(*args, **kwargs)
        self.use_sigmoid_cls = self.cls_out_channels == self.num_classes  # SSDHead set False
        if loss_bbox is None:
            beta = (self.train_cfg or {}).get('smoothl1_beta', 1.0)
            loss_bbox = dict(type='SmoothL1Loss', beta=beta, loss_weight=1.0)
        self.loss_bbox = MODELS.build(loss_bbox)

    def _init_layers(self) -> None:
        self.loss_cls = MODELS.build(self._loss_cls_cfg)
        sigmoid = bool(getattr(self.loss_cls, 'use_sigmoid', False))
        self.cls_out_channels = self.num_classes + (0 if sigmoid else 1)
        super()._init_layers()

    def init_weights(self) -> None:
        super().init_weights()
        if self.use_sigmoid_cls:  # the focal-loss prior: every anchor starts at p = 0.01
            for branch in self.cls_convs:
                nn.init.constant_(branch[-1].bias, bias_init_with_prob(0.01))
