"""Loss-ranked example selection for dense detectors, batched over images.

SSD's hard negative mining keeps every positive and the highest-loss negatives, at most
``neg_pos_ratio`` per positive. OHEM (as in the focal-loss paper's Table 1d) ranks all
examples by loss, removes overlapping ones with NMS and keeps the top ``batch_size``.
Everything works on (B, A) tensors at once: no Python loop over images or anchors.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from .fusion import FusedKernel

__all__ = ['hard_negative_mask', 'ohem_mask', 'box_iou', 'greedy_nms_sorted', 'RowGather']


def _check_mask(name: str, mask: Tensor, like: Tensor) -> None:
    if mask.shape != like.shape or mask.dtype != torch.bool:
        raise ValueError(f'{name} must be a bool tensor of shape {tuple(like.shape)}, '
                         f'got {mask.dtype} {tuple(mask.shape)}')


def _top_per_row(scores: Tensor, counts: Tensor) -> Tensor:
    """Bool mask of the ``counts[b]`` highest ``scores`` in each row b (-inf never chosen
    while ``counts`` does not exceed the row's finite scores)."""
    k_max = int(counts.max()) if counts.numel() else 0
    selected = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if k_max == 0:
        return selected
    ranked = scores.topk(k_max, dim=1).indices
    in_budget = torch.arange(k_max, device=scores.device) < counts.unsqueeze(1)
    return selected.scatter_(1, ranked, in_budget)


def _negatives_by_loss(losses: Tensor, positive: Tensor, negative: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
    """The losses of negatives (-inf elsewhere) and each row's positive and negative counts.

    One fused pass over the (B, A) masks: counting a bool mask eagerly casts it to a
    full-size int64 copy first."""
    scores = torch.where(negative, losses, float('-inf'))
    return scores, positive.sum(1), negative.sum(1)


_NEGATIVES_BY_LOSS = FusedKernel(_negatives_by_loss, class_dim_static=False)


def hard_negative_mask(losses: Tensor, positive: Tensor, negative: Tensor,
                       neg_pos_ratio: float = 3.0, min_negatives: int = 0) -> Tensor:
    """Select the hardest negatives per image.

    Args:
        losses: (B, A) float per-anchor loss used for ranking.
        positive: (B, A) bool, positive anchors (all kept by the caller).
        negative: (B, A) bool, negatives that may be selected (ignored anchors excluded).
        neg_pos_ratio: negatives per positive (> 0).
        min_negatives: negatives kept even in an image with few or no positives (>= 0).

    Returns:
        (B, A) bool: per image, the min(max(floor(ratio * P), min_negatives), N) negatives
        with the highest loss, where P and N count positives and candidate negatives.
    """
    _check_mask('positive', positive, losses)
    _check_mask('negative', negative, losses)
    scores, num_pos, num_neg = _NEGATIVES_BY_LOSS(losses.detach(), positive, negative)
    wanted = (num_pos.to(torch.float64) * neg_pos_ratio).floor().long().clamp(min=min_negatives)
    return _top_per_row(scores, torch.minimum(wanted, num_neg))


def _area(boxes: Tensor) -> Tensor:
    width = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    return width * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of (..., N, 4) and (..., M, 4) boxes in (x1, y1, x2, y2): shape (..., N, M)."""
    area1 = _area(boxes1)
    area2 = _area(boxes2)
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def greedy_nms_sorted(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over boxes already sorted by descending score, batched.

    Args:
        boxes: (B, M, 4) boxes, best first in each row.
        valid: (B, M) bool, boxes taking part.
        iou_threshold: a box is suppressed by a kept, better box with IoU > threshold.

    Returns:
        (B, M) bool kept mask, identical to sequential greedy NMS. It iterates
        keep <- valid & not any(kept better box overlapping), which settles one more position
        per pass at worst and in a few passes in practice (the Cluster-NMS fixed point).
    """
    overlaps = (box_iou(boxes, boxes) > iou_threshold).triu_(diagonal=1)
    overlaps &= valid.unsqueeze(2)
    keep = valid.clone()
    for _ in range(boxes.shape[1]):
        suppressed = torch.bmm(keep.unsqueeze(1).to(boxes.dtype), overlaps.to(boxes.dtype))
        new_keep = valid & (suppressed.squeeze(1) == 0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def ohem_mask(losses: Tensor, boxes: Tensor, positive: Tensor, candidate: Tensor,
              batch_size: int, nms_thr: float, neg_pos_ratio: float | None = None,
              min_negatives: int = 0) -> Tensor:
    """Online hard example mining with NMS, per image.

    Args:
        losses: (B, A) per-anchor loss.
        boxes: (B, A, 4) boxes used for NMS (the anchors), (x1, y1, x2, y2).
        positive: (B, A) bool, positive anchors.
        candidate: (B, A) bool, anchors that may be selected (positives and negatives).
        batch_size: examples kept per image (>= 1).
        nms_thr: IoU above which a lower-loss example is suppressed, in (0, 1]
            (1 disables suppression).
        neg_pos_ratio: if given, at most this many negatives per kept positive, with
            positives limited to ceil(batch_size / (1 + ratio)); None keeps the top
            ``batch_size`` regardless of label.
        min_negatives: with a ratio, negatives kept even without positives.

    Returns:
        (B, A) bool mask of kept anchors: the highest-loss NMS survivors.
    """
    _check_mask('positive', positive, losses)
    _check_mask('candidate', candidate, losses)
    num_anchors = losses.shape[1]
    order = losses.detach().masked_fill(~candidate, float('-inf')).argsort(dim=1, descending=True)
    sorted_valid = candidate.gather(1, order)
    sorted_pos = positive.gather(1, order) & sorted_valid
    sorted_boxes = boxes.gather(1, order.unsqueeze(2).expand(-1, -1, 4))
    if neg_pos_ratio is not None:
        pos_cap = -(-batch_size // (1 + neg_pos_ratio))  # ceil
    pool = min(num_anchors, max(4 * batch_size, 256))
    while True:
        # Greedy NMS decides a position from better positions only: a prefix is exact.
        keep = greedy_nms_sorted(sorted_boxes[:, :pool], sorted_valid[:, :pool], nms_thr)
        pos, neg = keep & sorted_pos[:, :pool], keep & ~sorted_pos[:, :pool]
        if neg_pos_ratio is None:
            enough = keep.sum(1) >= batch_size
        else:
            enough = (pos.sum(1) >= pos_cap) & (neg.sum(1) >= batch_size)
        if pool == num_anchors or bool(enough.all()):
            break
        pool = min(num_anchors, 2 * pool)
    if neg_pos_ratio is None:
        chosen = keep & (keep.cumsum(1) <= batch_size)
    else:
        num_pos = pos.sum(1).clamp(max=int(pos_cap))
        num_neg = (num_pos.to(torch.float64) * neg_pos_ratio).floor().long()
        num_neg = torch.minimum(num_neg.clamp(min=min_negatives), batch_size - num_pos)
        chosen = ((pos & (pos.cumsum(1) <= num_pos.unsqueeze(1)))
                  | (neg & (neg.cumsum(1) <= num_neg.unsqueeze(1))))
    selected = torch.zeros_like(candidate)
    return selected.scatter_(1, order[:, :pool], chosen)


# ---------------------------------------------------------------- the selected rows
class RowGather:
    """``x[rows]`` of a (N, ...) tensor for unique ``rows``; its backward recycles the dense
    gradient.

    The gradient of a gather is zero outside the gathered rows. Zero-filling a fresh (N, K)
    buffer every step costs a page fault per 4 KiB on CPU: for SSD300's 32 x 8732 x 81 scores,
    more than ranking them. So a CPU gradient buffer that nobody holds any more and that
    nobody wrote since (its storage's use count and its version counter tell) is reused: the
    rows written last time are zeroed and the new ones written. Values are those of a fresh
    zero-filled buffer. One instance serves one call site, e.g. a head's scores; it keeps
    its last buffer between steps.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None  # an alias: shares storage and version counter
        self._rows: Tensor | None = None
        self._version = -1

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        """Args: x (N, ...) tensor; rows (M,) int64, unique indices into dim 0.
        Returns: (M, ...) ``x[rows]``."""
        return _GatherRowsFunction.apply(x, rows, self)

    @property
    def held_bytes(self) -> int:
        """Memory this gather keeps between steps: its last gradient buffer."""
        return 0 if self._buffer is None else self._buffer.untyped_storage().nbytes()

    def dense_gradient(self, grad_rows: Tensor, rows: Tensor, shape: torch.Size) -> Tensor:
        """The (N, ...) gradient of ``x`` from the (M, ...) gradient of ``x[rows]``."""
        buffer = self._recycled(shape, grad_rows)
        if buffer is None:
            buffer = grad_rows.new_zeros(shape)
        else:
            buffer.index_fill_(0, self._rows, 0)
        buffer.index_copy_(0, rows, grad_rows)
        if buffer.device.type == 'cpu':
            self._buffer, self._rows = buffer.detach(), rows.clone()
            self._version = buffer._version
        return buffer

    def _recycled(self, shape: torch.Size, like: Tensor) -> Tensor | None:
        old = self._buffer
        if (old is None or old.shape != shape or old.dtype != like.dtype
                or old.device != like.device or old._version != self._version):
            return None
        holders = _storage_holders(old)
        if holders is None or holders != _sole_holder_count():
            return None
        return old.detach()  # a new tensor, so that autograd may keep it as .grad uncopied


class _GatherRowsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, rows: Tensor, gather: RowGather) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(rows)
        ctx.shape, ctx.gather = x.shape, gather
        return x.index_select(0, rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows: Tensor) -> tuple:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        return ctx.gather.dense_gradient(grad_rows.contiguous(), rows, ctx.shape), None, None


def _storage_holders(tensor: Tensor) -> int | None:
    """References to the tensor's storage (None where torch cannot say)."""
    use_count = getattr(torch._C, '_storage_Use_Count', None)
    return None if use_count is None else use_count(tensor.untyped_storage()._cdata)


@functools.cache
def _sole_holder_count() -> int | None:
    """What :func:`_storage_holders` reads for a tensor whose storage nobody else holds,
    measured once (the count includes the storage object that reading it creates)."""
    return _storage_holders(torch.empty(1).detach())
