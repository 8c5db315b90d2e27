"""Property tests (hypothesis) of the losses and of the mining rules in :mod:`plugin.ops`.

Losses, over random shapes, dtypes, label patterns and parameters: finite values and
gradients for any logits up to +-1e4, and gradients equal to those of the float64 formulas
in tests/reference.py (on the same, dtype-rounded inputs). Mining: the budget, ignored anchors
never chosen, the hardest negatives first, NMS respected, positives always kept.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reference as ref
from mmdet.structures.bbox import bbox_overlaps  # an IoU written apart from plugin/ops/nms.py

from plugin.ops import (equalized_focal_loss, focal_loss_star, hard_negative_mask, ohem_mask,
                        poly1_focal_loss, sigmoid_focal_loss, softmax_focal_loss)

# Small on purpose: the default suite runs these on every commit.
PROPERTY = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
# The mining rules run in milliseconds: more examples, to reach rare budgets.
MINING_PROPERTY = settings(PROPERTY, max_examples=100)

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
# Each gradient is rounded to the input dtype at the end (half inputs are computed in
# float32). float64 is held to 1e-6 here; the float64 test below holds a loss to 1e-12.
GRAD_RTOL = {torch.float64: 1e-6, torch.float32: 1e-5, torch.bfloat16: 1e-2,
             torch.float16: 2e-3}
LABEL_PATTERNS = ['background', 'positives', 'mixed', 'soft']


@st.composite
def loss_problems(draw, softmax: bool = False, max_scale: float = 12.0):
    """(logits, targets): N x C logits of one dtype and scale, targets of one pattern."""
    num_rows = draw(st.integers(0, 40))
    num_classes = draw(st.integers(1, 8))
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([s for s in (0.1, 1.0, 5.0, 12.0, 1e4) if s <= max_scale]))
    pattern = draw(st.sampled_from(LABEL_PATTERNS[:3] if softmax else LABEL_PATTERNS))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    outputs = num_classes + 1 if softmax else num_classes
    # Clamped where the float64 formulas, which take 1 - sigmoid(x) by subtraction, are
    # accurate to ~1e-11 (at |x| = 30 they are off by 1e-3).
    logits = (torch.randn(num_rows, outputs, generator=g, dtype=torch.float64) * scale
              ).clamp(-max_scale, max_scale).to(dtype)
    if pattern == 'soft':
        return logits, torch.rand(num_rows, num_classes, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (num_rows,), generator=g)
    background = {'background': torch.ones(num_rows, dtype=torch.bool),
                  'positives': torch.zeros(num_rows, dtype=torch.bool),
                  'mixed': torch.rand(num_rows, generator=g) < 0.7}[pattern]
    return logits, labels.masked_fill(background, num_classes)


def _dense(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    return targets if targets.dtype.is_floating_point else ref.one_hot(targets, num_classes)


alphas = st.one_of(st.none(), st.floats(0.0, 1.0))
gammas = st.floats(0.0, 5.0)


def _sigmoid_cases(x, t, alpha, gamma):
    """(ours, float64 reference) for each sigmoid-family loss, summed."""
    num_classes = x.shape[-1]
    dense = _dense(t, num_classes)
    xd = x.detach().double().requires_grad_()
    ref_alpha = 0.25 if alpha is None else alpha  # FL* and EFL take a float alpha
    class_gammas = torch.linspace(gamma + 0.5, gamma + 4.0, num_classes, dtype=torch.float64)
    return {
        'sigmoid': (lambda x: sigmoid_focal_loss(x, t, alpha, gamma, 'sum'),
                    ref.sigmoid_focal(xd, dense, alpha, gamma)),
        'poly1': (lambda x: poly1_focal_loss(x, t, alpha=alpha, gamma=gamma, epsilon=1.0,
                                                reduction='sum'),
                  ref.poly1_focal(xd, dense, alpha, gamma, 1.0)),
        'fl_star': (lambda x: focal_loss_star(x, t, alpha=ref_alpha, gamma=gamma + 0.5,
                                                 beta=1.0, reduction='sum'),
                    ref.focal_star(xd, dense, gamma + 0.5, 1.0, ref_alpha)),
        'efl': (lambda x: equalized_focal_loss(x, t, class_gammas, 2.0, ref_alpha, 'sum'),
                ref.equalized_focal(xd, dense, class_gammas, 2.0, ref_alpha)),
    }, xd


def _assert_value_close(ours: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor) -> None:
    """Half inputs are computed in float32, so the value is float32-accurate for every dtype,
    up to a few ulp of each |logit| in absolute terms: with class-index targets a sum is
    taken as every entry as a negative plus (positive - negative) at the label entries."""
    assert torch.isfinite(ours)
    rtol = 1e-6 if logits.dtype == torch.float64 else 1e-5
    atol = 4 * _compute_eps(logits) * float(logits.double().abs().sum() + logits.numel())
    torch.testing.assert_close(ours.double(), expected.detach(), rtol=rtol, atol=atol)


def _compute_eps(logits: torch.Tensor) -> float:
    return 2.2e-16 if logits.dtype == torch.float64 else 1.2e-7


def _assert_grad_close(ours: torch.Tensor, expected: torch.Tensor, logits: torch.Tensor) -> None:
    """Relative to the dtype's rounding, plus a few ulp of the largest |logit| in absolute
    terms (a softmax's p - 1 inherits the rounding of its log-sum-exp), plus float16's
    subnormal spacing."""
    assert ours.dtype == logits.dtype and torch.isfinite(ours).all()
    largest = float(logits.double().abs().amax()) if logits.numel() else 0.0
    atol = 8 * _compute_eps(logits) * (1 + largest)
    atol += 6e-8 if logits.dtype == torch.float16 else 0.0
    torch.testing.assert_close(ours.double(), expected, rtol=GRAD_RTOL[logits.dtype], atol=atol)


@PROPERTY
@given(problem=loss_problems(), alpha=alphas, gamma=gammas)
def test_sigmoid_family_gradients_match_float64(problem, alpha, gamma):
    logits, targets = problem
    cases, xd = _sigmoid_cases(logits, targets, alpha, gamma)
    for ours_fn, expected in cases.values():
        x = logits.clone().requires_grad_()
        value = ours_fn(x)
        (grad,) = torch.autograd.grad(value, x)
        (expected_grad,) = torch.autograd.grad(expected.sum(), xd)
        _assert_value_close(value, expected.sum(), logits)
        _assert_grad_close(grad, expected_grad, logits)


@PROPERTY
@given(problem=loss_problems(softmax=True), alpha=alphas, gamma=gammas)
def test_softmax_focal_gradients_match_float64(problem, alpha, gamma):
    logits, labels = problem
    outputs = logits.shape[-1]
    per_output = None if alpha is None else torch.tensor([alpha] * (outputs - 1) + [1 - alpha],
                                                         dtype=torch.float64)
    x = logits.clone().requires_grad_()
    xd = logits.detach().double().requires_grad_()
    value = softmax_focal_loss(x, labels, alpha, gamma, 'sum')
    expected = ref.softmax_focal(xd, labels, per_output, gamma).sum()
    (grad,) = torch.autograd.grad(value, x)
    (expected_grad,) = torch.autograd.grad(expected, xd)
    _assert_value_close(value, expected, logits)
    _assert_grad_close(grad, expected_grad, logits)


@PROPERTY
@given(problem=loss_problems(max_scale=1e4), alpha=alphas, gamma=gammas)
def test_every_loss_is_finite_for_logits_up_to_1e4(problem, alpha, gamma):
    logits, targets = problem
    big = (logits.double().sign() * 1e4).to(logits.dtype)  # every entry saturated, either way
    softmax_labels = (targets.argmax(-1) if targets.dtype.is_floating_point else targets)
    for inputs in (logits, big):
        for fn in (
            lambda x: sigmoid_focal_loss(x, targets, alpha, gamma, 'sum'),
            lambda x: poly1_focal_loss(x, targets, alpha=alpha, gamma=gamma, epsilon=-1.0,
                                         reduction='sum'),
            lambda x: focal_loss_star(x, targets, alpha=alpha, gamma=gamma + 0.5, beta=-1.0,
                                        reduction='sum'),
            lambda x: equalized_focal_loss(x, targets, torch.full(x.shape[-1:], gamma + 2.0),
                                           2.0, alpha, 'sum'),
            lambda x: softmax_focal_loss(x, softmax_labels.clamp(max=x.shape[-1] - 1), alpha,
                                         gamma, 'sum'),
        ):
            x = inputs.clone().requires_grad_()
            value = fn(x)
            (grad,) = torch.autograd.grad(value, x)
            assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize('loss', ['fl_star', 'softmax'])
def test_float64_logits_give_float64_accurate_losses(loss):
    x = torch.tensor([[0.1541, -0.0293]], dtype=torch.float64)
    label = torch.tensor([1])
    if loss == 'fl_star':
        value = focal_loss_star(x, label, alpha=0.3, gamma=2.5, beta=1.0, reduction='sum')
        expected = ref.focal_star(x, ref.one_hot(label, 2), 2.5, 1.0, 0.3).sum()
    else:
        value = softmax_focal_loss(x, label, 0.3, 0.0, 'sum')
        expected = ref.softmax_focal(x, label, torch.tensor([0.3, 0.7], dtype=torch.float64),
                                     0.0).sum()
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- mining
@st.composite
def mining_problems(draw):
    """Per-anchor losses (with ties), positives, candidates (the rest ignored) and boxes."""
    num_images = draw(st.integers(1, 4))
    num_anchors = draw(st.integers(1, 120))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    levels = draw(st.sampled_from([None, 4]))  # None: distinct losses; 4: many ties
    losses = torch.rand(num_images, num_anchors, generator=g, dtype=torch.float64)
    if levels:
        losses = (losses * levels).floor()
    losses = losses.to(draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16])))
    pos_rate, ignore_rate = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0])), draw(
        st.sampled_from([0.0, 0.3, 1.0]))
    positive = torch.rand(num_images, num_anchors, generator=g) < pos_rate
    candidate = torch.rand(num_images, num_anchors, generator=g) >= ignore_rate
    positive &= candidate
    xy = torch.rand(num_images, num_anchors, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 4 + torch.rand(num_images, num_anchors, 2, generator=g) * 20], 2)
    return losses, positive, candidate, boxes


ratios = st.sampled_from([0.5, 1.5, 3.0, 7.5])


@MINING_PROPERTY
@given(problem=mining_problems(), ratio=ratios, min_negatives=st.integers(0, 20))
def test_hard_negatives_budget_and_ranking(problem, ratio, min_negatives):
    losses, positive, candidate, _ = problem
    negative = candidate & ~positive
    chosen = hard_negative_mask(losses, positive, negative, ratio, min_negatives)
    assert not (chosen & ~negative).any()  # never an ignored anchor, never a positive
    for row in range(losses.shape[0]):
        budget = max(int(positive[row].sum().item() * ratio), min_negatives)
        assert int(chosen[row].sum()) == min(budget, int(negative[row].sum()))
        picked, left = losses[row][chosen[row]], losses[row][negative[row] & ~chosen[row]]
        if picked.numel() and left.numel():  # the hardest first
            assert picked.min() >= left.max()


def _greedy_survivors(losses: list[float], boxes: torch.Tensor, candidate: list[bool],
                      nms_thr: float) -> list[int]:
    """Sequential greedy NMS by a plain loop: candidates by descending loss, each kept unless a
    kept one overlaps it (mmdet's IoU) by more than nms_thr."""
    overlaps = bbox_overlaps(boxes, boxes).tolist()
    kept = []
    for i in sorted((i for i in range(len(losses)) if candidate[i]), key=lambda i: -losses[i]):
        if all(overlaps[i][j] <= nms_thr for j in kept):
            kept.append(i)
    return kept


@MINING_PROPERTY
@given(problem=mining_problems(), batch_size=st.integers(1, 64),
       nms_thr=st.sampled_from([0.3, 0.5, 0.7, 1.0]),
       ratio=st.one_of(st.none(), ratios), min_negatives=st.integers(0, 8))
def test_ohem_budget_nms_and_ignored(problem, batch_size, nms_thr, ratio, min_negatives):
    losses, positive, candidate, boxes = problem
    chosen = ohem_mask(losses, boxes, positive, candidate, batch_size, nms_thr, ratio,
                       min_negatives)
    assert not (chosen & ~candidate).any()  # never an ignored anchor
    for row in range(losses.shape[0]):
        picked = chosen[row]
        num_pos = int((picked & positive[row]).sum())
        num_neg = int((picked & ~positive[row]).sum())
        assert num_pos + num_neg <= batch_size
        overlaps = bbox_overlaps(boxes[row][picked], boxes[row][picked]).fill_diagonal_(0)
        assert (overlaps <= nms_thr).all()
        if ratio is None and candidate[row].any():
            # The highest-loss candidate survives any NMS, and is always taken.
            assert picked[losses[row].masked_fill(~candidate[row], -1).argmax()] or \
                losses[row][candidate[row]].max() == losses[row][picked].max()
        if ratio is not None:
            assert num_neg <= max(math.floor(num_pos * ratio), min_negatives)
        row_losses = losses[row].tolist()
        candidates = [row_losses[i] for i in range(len(row_losses)) if candidate[row, i]]
        if len(set(candidates)) < len(candidates):
            continue  # tied losses: NMS survivors depend on the order of the ties
        # Lower bounds too (an empty selection must fail): the counts the rule must keep.
        survivors = _greedy_survivors(row_losses, boxes[row], candidate[row].tolist(), nms_thr)
        if ratio is None:
            assert num_pos + num_neg == min(batch_size, len(survivors))
            continue
        positive_survivors = sum(bool(positive[row, i]) for i in survivors)
        expected_pos = min(math.ceil(batch_size / (1 + ratio)), positive_survivors)
        expected_neg = min(max(math.floor(ratio * expected_pos), min_negatives),
                           batch_size - expected_pos, len(survivors) - positive_survivors)
        assert (num_pos, num_neg) == (expected_pos, expected_neg)


@pytest.fixture(scope='module')
def build_sampler():
    from mmdet.registry import TASK_UTILS

    import plugin  # noqa: F401
    return lambda **kw: TASK_UTILS.build(dict(type='HardNegativeSampler', **kw))


@MINING_PROPERTY
@given(problem=mining_problems(), ratio=ratios, num_classes=st.integers(1, 5),
       temperature=st.sampled_from([None, 0.0, 0.2, 1.0, 10.0]),
       min_negatives=st.integers(0, 8))
def test_hard_and_soft_sampler_keep_positives_and_spend_the_budget(
        build_sampler, problem, ratio, num_classes, temperature, min_negatives):
    losses, positive, candidate, boxes = problem
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_classes, losses.shape, generator=g).masked_fill(~positive,
                                                                                 num_classes)
    mode = dict(mode='hard_negative') if temperature is None else dict(
        mode='soft', temperature=temperature)
    weights = build_sampler(neg_pos_ratio=ratio, min_neg_per_image=min_negatives,
                            **mode).select(losses, labels, candidate.float(), boxes,
                                           num_classes)
    kept = positive & candidate
    assert (weights[kept] == 1).all()  # every positive, at full weight
    assert not weights[~candidate].any()  # no ignored anchor
    assert ((weights >= 0) & (weights <= 1)).all()
    negative = candidate & ~kept
    for row in range(losses.shape[0]):
        budget = min(max(math.floor(ratio * int(kept[row].sum())), min_negatives),
                     int(negative[row].sum()))
        spent = float(weights[row][negative[row]].sum())
        assert spent == pytest.approx(budget, rel=5e-4, abs=1e-4)
