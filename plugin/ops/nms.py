"""Greedy non-maximum suppression for OHEM over anchors, batched over images, pure PyTorch.

Boxes come sorted best first; a box is kept unless a kept, better box overlaps it by more than
the IoU threshold: the result of sequential greedy NMS, decided a block of positions at a time.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ['box_iou', 'greedy_nms_sorted', 'greedy_nms_blocks']


def _area(boxes: Tensor) -> Tensor:
    width = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    return width * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def _intersection_and_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Areas of intersection and union of (..., N, 4) and (..., M, 4) boxes: (..., N, M) each,
    one coordinate at a time (no (N, M, 2) corner tensors)."""
    width = (torch.minimum(boxes1[..., :, None, 2], boxes2[..., None, :, 2])
             - torch.maximum(boxes1[..., :, None, 0], boxes2[..., None, :, 0])).clamp_(min=0)
    height = (torch.minimum(boxes1[..., :, None, 3], boxes2[..., None, :, 3])
              - torch.maximum(boxes1[..., :, None, 1], boxes2[..., None, :, 1])).clamp_(min=0)
    inter = width.mul_(height)
    return inter, _area(boxes1)[..., :, None] + _area(boxes2)[..., None, :] - inter


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of (..., N, 4) and (..., M, 4) boxes in (x1, y1, x2, y2): shape (..., N, M)."""
    inter, union = _intersection_and_union(boxes1, boxes2)
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def _overlap_exceeds(boxes1: Tensor, boxes2: Tensor, iou_threshold: float) -> Tensor:
    """box_iou(boxes1, boxes2) > iou_threshold, as inter > threshold * union (no division)."""
    inter, union = _intersection_and_union(boxes1, boxes2)
    return inter > union.mul_(iou_threshold)


def greedy_nms_sorted(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over boxes already sorted by descending score, batched.

    Args:
        boxes: (B, M, 4) boxes, best first in each row.
        valid: (B, M) bool, boxes taking part.
        iou_threshold: a box is suppressed by a kept, better box with IoU > threshold.

    Returns:
        (B, M) bool kept mask, identical to sequential greedy NMS.
    """
    return torch.cat([valid[:, :0], *greedy_nms_blocks(boxes, valid, iou_threshold)], 1)


# Positions decided together by greedy_nms_blocks. One fixed point over all M positions
# needs hundreds of M x M passes on dense anchors; blocks of 64, compared only with the boxes
# kept before them, need far less work (timed by tools/benchmark_ohem.py).
_NMS_BLOCK = 64


def greedy_nms_blocks(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Iterator[Tensor]:
    """The kept masks of greedy_nms_sorted, (B, <= _NMS_BLOCK) at a time, best first: a
    caller may stop early, since a verdict depends on better boxes only."""
    kept_boxes, kept = boxes[:, :0], valid[:, :0]  # the kept boxes so far (padded, flagged)
    for start in range(0, boxes.shape[1], _NMS_BLOCK):
        block = boxes[:, start:start + _NMS_BLOCK]
        earlier = _overlap_exceeds(block, kept_boxes, iou_threshold) & kept[:, None, :]
        alive = valid[:, start:start + _NMS_BLOCK] & ~earlier.any(2)
        # Within the block: keep <- alive & no kept better box overlapping, to the fixed point
        # (each pass settles at least one more position; a few passes in practice).
        inner = _overlap_exceeds(block, block, iou_threshold).tril_(diagonal=-1)
        block_keep = alive
        for _ in range(block.shape[1]):
            settled = alive & ~(inner & block_keep[:, None, :]).any(2)
            if torch.equal(settled, block_keep):
                break
            block_keep = settled
        yield block_keep
        # Only kept boxes suppress later ones: carry them on, packed to the front.
        packed = block_keep.byte().argsort(dim=1, descending=True, stable=True)
        packed = packed[:, :int(block_keep.sum(1).max())]
        packed_boxes = block.gather(1, packed.unsqueeze(2).expand(-1, -1, 4))
        kept_boxes = torch.cat([kept_boxes, packed_boxes], 1)
        kept = torch.cat([kept, block_keep.gather(1, packed)], 1)
