"""DR loss (Qian et al., "DR Loss: Improving Object Detection by Distributional Ranking",
CVPR 2020): rank the positives' scores above the negatives' within an image.

With p the sigmoid probabilities of one image's (anchor, class) entries, split into
positives (an anchor's own class) and negatives (every other class of a non-ignored anchor):

    q-_j = softmax_j(p-_j / lambda-)    P- = sum_j q-_j p-_j   (hard negatives weigh more)
    q+_i = softmax_i(-p+_i / lambda+)   P+ = sum_i q+_i p+_i   (hard positives weigh more)
    loss = tau * l(P- - P+ + gamma),    l(z) = log(1 + exp(L z)) / L

q- is the paper's closed-form worst case, the maximizer of sum_j q_j p-_j - lambda- KL(q || u)
with u uniform (q+ the minimizer for the positives): lambda -> 0 gives the hardest score (max
of p-, min of p+), lambda -> inf the mean. The paper sums the loss over images; the authors'
code ranks all images of a GPU's batch at once.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .fast.targets import compute_dtype
from .params import DRLossParams, check_inputs, check_reduction

__all__ = ['dr_loss']


def dr_loss(inputs: Tensor, targets: Tensor, weight: Tensor | None = None, *,
            pos_lambda: float = 1.0, neg_lambda: float = 0.1 / math.log(3.5),
            margin: float = 0.5, smoothness: float = 6.0, scale: float = 4.0,
            grouping: str = 'image', reduction: str = 'sum') -> Tensor:
    """DR loss over sigmoid scores; the paper's defaults (lambda+ = 1, lambda- = 0.1 / ln 3.5,
    gamma = 0.5, L = 6, tau = 4).

    Args:
        inputs: logits (B, A, C) (B images of A anchors) or (N, C) (one group of rows);
            float16/bfloat16 are computed in float32.
        targets: integer class indices shaped ``inputs.shape[:-1]``; index C is background.
        weight: optional per-anchor weight shaped ``inputs.shape[:-1]``, >= 0: an anchor of
            weight w counts as w copies of it in both distributions; 0 leaves it out (mmdet's
            ignored anchors).
        pos_lambda, neg_lambda: the temperatures lambda+ and lambda- (> 0).
        margin: gamma, the gap asked between P+ and P-. smoothness: L (> 0).
        scale: tau (>= 0), the loss's multiplier.
        grouping: 'image': (B, A, C) inputs give one ranking per image, summed (the paper);
            'batch': one ranking over all rows (the authors' code). (N, C) inputs are one
            group either way.
        reduction: over the groups: 'sum' (the paper), 'mean' (a loss that does not grow
            with the batch, as the authors' code: one ranking per GPU, averaged over GPUs),
            or 'none' (one loss per group, shape (G,)).

    Returns:
        The loss (a scalar unless reduction='none') in float32 (float64 for float64
        inputs). A group without positives takes P+ = 1 (as the authors' code), one without
        negatives P- = 0.
    """
    params = DRLossParams(pos_lambda, neg_lambda, margin, smoothness, scale, grouping)
    check_reduction(reduction)
    if targets.dtype.is_floating_point:
        raise TypeError('dr_loss takes integer class indices as targets (index C: '
                        f'background), got dtype {targets.dtype}')
    if inputs.dim() not in (2, 3):
        raise ValueError(f'dr_loss takes logits (N, C) or (B, A, C), got shape '
                         f'{tuple(inputs.shape)}')
    check_inputs(inputs, targets, weight, max_label=inputs.shape[-1], reduction='sum')
    if weight is not None and weight.dim() != targets.dim():
        raise ValueError(f'dr_loss takes a per-anchor weight {tuple(targets.shape)}, got '
                         f'{tuple(weight.shape)}')
    num_classes = inputs.shape[-1]
    groups = inputs.shape[0] if inputs.dim() == 3 and grouping == 'image' else 1
    p = torch.sigmoid(inputs.to(compute_dtype(inputs))).reshape(groups, -1)
    anchor_weight = torch.ones_like(targets, dtype=p.dtype) if weight is None else weight
    entry_weight = anchor_weight.to(p.dtype).unsqueeze(-1).expand(inputs.shape)
    entry_weight = entry_weight.reshape(groups, -1)
    classes = torch.arange(num_classes, device=targets.device)
    positive = (targets.unsqueeze(-1) == classes).reshape(groups, -1)
    expected_neg = _expected_score(p, ~positive, entry_weight, params.neg_lambda, empty=0.0)
    expected_pos = _expected_score(p, positive, entry_weight, -params.pos_lambda, empty=1.0)
    gap = expected_neg - expected_pos + params.margin
    losses = params.scale * F.softplus(params.smoothness * gap) / params.smoothness
    return losses if reduction == 'none' else getattr(losses, reduction)()


def _expected_score(p: Tensor, member: Tensor, weight: Tensor, temperature: float,
                    empty: float) -> Tensor:
    """(G,) sum_j q_j p_j over each group's members, q = softmax(p / temperature) with each
    member's weight as its multiplicity; ``empty`` for a group without members."""
    member = member & (weight > 0)
    present = member.any(1, keepdim=True)
    logits = p / temperature + weight.clamp(min=torch.finfo(p.dtype).tiny).log()
    # Non-members get q = 0; a group without members, a finite dummy row (no NaN gradient).
    logits = logits.masked_fill(~member & present, -math.inf)
    expected = (torch.softmax(logits, dim=1) * p).sum(1)
    return torch.where(present.squeeze(1), expected, torch.full_like(expected, empty))
