"""Loss-ranked example selection for dense detectors, batched over images.

SSD's hard negative mining keeps every positive and the highest-loss negatives, at most
``neg_pos_ratio`` per positive. Soft negative mining spends the same budget of negatives as
weights that fall smoothly with the loss rank: one temperature spans hard mining (0) to every
negative taking an equal share (infinity). OHEM (as in the focal-loss paper's Table 1d) ranks all
examples by loss, removes overlapping ones with NMS and keeps the top ``batch_size``.
Everything works on (B, A) tensors at once: no Python loop over images or anchors.
"""
from __future__ import annotations

import math
import torch
from torch import Tensor

from .fast import CompiledKernel
from .nms import greedy_nms_blocks

__all__ = ['hard_negative_mask', 'soft_negative_weights', 'ohem_mask']


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


_NEGATIVES_BY_LOSS = CompiledKernel(_negatives_by_loss, static_trailing_dims=0)


def _negative_budget(num_pos: Tensor, num_neg: Tensor, neg_pos_ratio: float,
                     min_negatives: int) -> Tensor:
    """Negatives per image: min(max(floor(ratio * P), min_negatives), N), int64 (B,)."""
    wanted = (num_pos.to(torch.float64) * neg_pos_ratio).floor().long().clamp(min=min_negatives)
    return torch.minimum(wanted, num_neg)


def _check_mining_inputs(losses: Tensor, positive: Tensor, negative: Tensor,
                         neg_pos_ratio: float, min_negatives: int) -> None:
    _check_mask('positive', positive, losses)
    _check_mask('negative', negative, losses)
    if not neg_pos_ratio > 0:
        raise ValueError(f'neg_pos_ratio={neg_pos_ratio}; allowed: a number > 0')
    if not isinstance(min_negatives, int) or min_negatives < 0:
        raise ValueError(f'min_negatives={min_negatives!r}; allowed: an int >= 0')


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
    _check_mining_inputs(losses, positive, negative, neg_pos_ratio, min_negatives)
    scores, num_pos, num_neg = _NEGATIVES_BY_LOSS(losses.detach(), positive, negative)
    return _top_per_row(scores, _negative_budget(num_pos, num_neg, neg_pos_ratio, min_negatives))


def soft_negative_weights(losses: Tensor, positive: Tensor, negative: Tensor,
                          neg_pos_ratio: float = 3.0, temperature: float = 1.0,
                          min_negatives: int = 0) -> Tensor:
    """Soft hard-negative mining: a weight in [0, 1] per negative, falling with its loss rank.

    Each image spends the budget hard mining would keep, K = min(max(floor(ratio * P),
    min_negatives), N) for P positives and N candidate negatives, but as weights: ranking its
    negatives by loss, hardest first (r = 0, 1, ...), rank r gets the mean over [r, r + 1) of
    a logistic step of width s = temperature * K ranks,

        w_r = s * (softplus(c - r / s) - softplus(c - (r + 1) / s)),
        c = log(expm1(K / s)) - log(-expm1(-(N - K) / s)),

    where c is the closed form that makes the weights of the N negatives sum to K.
    The temperature is measured in budgets (the soft edge is about ``temperature * K`` ranks
    wide); ranks make it scale-free, the same early and late in training. 0 is the mask of
    :func:`hard_negative_mask`; 1 gives the hardest negative 0.63, falling to 0.01 over about
    five budgets; as it grows the weights tend to K / N on every candidate (``inf``). The far
    tail holding under 5e-4 of K is left at 0, which spares ranking and training on it
    (timed by ``tools/benchmark_mining.py``).

    Args:
        losses: (B, A) per-anchor loss used for ranking, any float dtype (no gradient).
        positive: (B, A) bool, positive anchors (weight 0 here: the caller keeps them).
        negative: (B, A) bool, negatives that may be weighted (ignored anchors excluded).
        neg_pos_ratio: budget of negatives per positive (> 0).
        temperature: width of the soft edge in budgets (>= 0, ``inf`` allowed).
        min_negatives: budget even in an image with few or no positives (>= 0).

    Returns:
        (B, A) float32 weights (float64 for float64 losses), monotone in the loss (ties
        aside), 0 outside ``negative``, summing to K in each image.
    """
    if not temperature >= 0:
        raise ValueError(f'temperature={temperature}; allowed: a number >= 0 (0: hard '
                         f'mining, inf: uniform)')
    dtype = torch.promote_types(losses.dtype, torch.float32)
    if temperature == 0:
        return hard_negative_mask(losses, positive, negative, neg_pos_ratio,
                                  min_negatives).to(dtype)
    _check_mining_inputs(losses, positive, negative, neg_pos_ratio, min_negatives)
    scores, num_pos, num_neg = _NEGATIVES_BY_LOSS(losses.detach(), positive, negative)
    budget = _negative_budget(num_pos, num_neg, neg_pos_ratio, min_negatives)
    edge = _LogisticEdge(budget[:, None].double(), num_neg[:, None].double(), temperature)
    weighed = edge.ranks_weighed()
    # Only the ranks that carry weight are ranked, hardest first: a partial top-k, no sort.
    order = scores.topk(int(weighed.max()), dim=1).indices
    ranked = edge.weights(order.shape[1], weighed, dtype)
    return torch.zeros_like(scores, dtype=dtype).scatter_(1, order, ranked)


class _LogisticEdge:
    """The per-image logistic step of :func:`soft_negative_weights`, float64 (B, 1) budgets K
    and candidate counts N."""

    # The tail left at weight 0 holds less than this share of the budget.
    TAIL = 5e-4

    def __init__(self, budget: Tensor, count: Tensor, temperature: float) -> None:
        self.budget, self.count, self.temperature = budget, count, temperature
        self.width = temperature * budget.clamp(min=1)
        # log(expm1(x)) = x + log(-expm1(-x)): finite for the large x of small temperatures
        self.centre = (budget / self.width + torch.log(-torch.expm1(-budget / self.width))
                       - torch.log(-torch.expm1((budget - count) / self.width)))

    def ranks_weighed(self) -> Tensor:
        """(B, 1) number of leading ranks with weight: the tail beyond them, s softplus(c - R
        / s), holds at most TAIL * K."""
        if self.temperature == float('inf'):
            return self.count
        share = self.TAIL / self.temperature  # softplus(c - R / s) <= share, with
        tail = self.width * (self.centre - share - math.log(-math.expm1(-share)))  # log expm1
        weighed = torch.minimum(tail.ceil(), self.count)
        weighed = torch.where(self.budget >= self.count, self.count, weighed)
        return torch.where(self.budget > 0, weighed, 0.0)

    def weights(self, num_ranks: int, weighed: Tensor, dtype: torch.dtype) -> Tensor:
        """(B, num_ranks) weights of ranks 0, 1, ..., 0 from rank ``weighed`` on."""
        rank = torch.arange(num_ranks, dtype=torch.float64, device=self.budget.device)
        if self.temperature == float('inf'):
            uniform = (self.budget / self.count.clamp(min=1)).expand(-1, num_ranks)
            return torch.where(rank < weighed, uniform, 0.0).to(dtype)
        return _LOGISTIC_CELLS(self.centre, self.width, self.budget, self.count, weighed, rank,
                               dtype=dtype)


def _logistic_cells(centre: Tensor, width: Tensor, budget: Tensor, count: Tensor,
                    weighed: Tensor, rank: Tensor, dtype: torch.dtype) -> Tensor:
    """The mean of the logistic step over each rank's cell [r, r + 1), in ``dtype``."""
    upper = centre - rank / width
    weights = width * _softplus_difference(upper, upper - 1 / width)
    weights = torch.where(budget >= count, 1.0, weights)  # everything kept: c = inf
    return torch.where(rank < weighed, weights, 0.0).to(dtype)


# One fused pass instead of a dozen float64 temporaries (benchmark_mining.py, soft rows).
_LOGISTIC_CELLS = CompiledKernel(_logistic_cells, static_trailing_dims=0)


def _softplus_difference(u: Tensor, v: Tensor) -> Tensor:
    """softplus(u) - softplus(v) for u >= v, without cancellation in the linear tail."""
    return (u.clamp(min=0) - v.clamp(min=0)
            + torch.log1p(torch.exp(-u.abs())) - torch.log1p(torch.exp(-v.abs())))


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
    if losses.shape[1] == 0:
        return candidate.clone()
    order = losses.detach().masked_fill(~candidate, float('-inf')).argsort(dim=1, descending=True)
    sorted_valid = candidate.gather(1, order)
    sorted_pos = positive.gather(1, order) & sorted_valid
    sorted_boxes = boxes.gather(1, order.unsqueeze(2).expand(-1, -1, 4))
    # ceil(batch_size / (1 + ratio)) positives at most
    pos_cap = None if neg_pos_ratio is None else int(-(-batch_size // (1 + neg_pos_ratio)))
    keep = sorted_valid[:, :0]
    for block_keep in greedy_nms_blocks(sorted_boxes, sorted_valid, nms_thr):
        # NMS decides a position from better positions only: stop once the survivors so far
        # hold every one the selection takes.
        keep = torch.cat([keep, block_keep], 1)
        chosen, final = _ohem_selection(keep, sorted_pos, batch_size, pos_cap, neg_pos_ratio,
                                        min_negatives)
        if bool(final.all()):
            break
    return torch.zeros_like(candidate).scatter_(1, order[:, :keep.shape[1]], chosen)


def _ohem_selection(keep: Tensor, sorted_pos: Tensor, batch_size: int, pos_cap: int | None,
                    neg_pos_ratio: float | None, min_negatives: int) -> tuple[Tensor, Tensor]:
    """What OHEM takes of the NMS survivors ``keep`` ((B, M) bool, the first M positions of
    the ranking, best first) and, (B,) bool, whether positions further down could change it.

    Without a ratio: the top ``batch_size`` survivors. With one: the best ``pos_cap``
    positive survivors at most, then floor(ratio * kept) negatives (at least
    ``min_negatives``) within ``batch_size``.
    """
    if neg_pos_ratio is None:
        return keep & (keep.cumsum(1) <= batch_size), keep.sum(1) >= batch_size
    seen = keep.shape[1]
    pos, neg = keep & sorted_pos[:, :seen], keep & ~sorted_pos[:, :seen]
    num_pos = pos.sum(1).clamp(max=pos_cap)
    num_neg = (num_pos.to(torch.float64) * neg_pos_ratio).floor().long()
    num_neg = torch.minimum(num_neg.clamp(min=min_negatives), batch_size - num_pos)
    chosen = ((pos & (pos.cumsum(1) <= num_pos.unsqueeze(1)))
              | (neg & (neg.cumsum(1) <= num_neg.unsqueeze(1))))
    # The positives are settled at the cap, or when none is left further down.
    settled = (num_pos == pos_cap) | ~sorted_pos[:, seen:].any(1)
    return chosen, settled & (neg.sum(1) >= num_neg)
