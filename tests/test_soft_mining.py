"""soft_negative_weights: its limits, its budget and a per-image reference written here.

The reference solves each image's budget equation by bisection in Python floats and weights
each rank by the logistic step averaged over its cell, so it shares neither the closed form of
the centre nor the vectorized ranking and scatter of the code under test.
"""
import pytest
import torch
from mmdet.registry import TASK_UTILS

import plugin  # noqa: F401
from reference import soft_weights_of_image
from plugin.ops import hard_negative_mask, soft_negative_weights


def _problem(seed, num_images=5, num_anchors=400):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(num_images, num_anchors, generator=g) * 3
    positive = torch.rand(num_images, num_anchors, generator=g) < 0.02
    positive[0, :120] = True  # many positives: the budget exceeds the candidates
    positive[1] = False  # no positives
    positive[2] = False
    positive[2, 7] = True  # one positive
    ignored = (torch.rand(num_images, num_anchors, generator=g) < 0.3) & ~positive
    return losses, positive, ~positive & ~ignored


def _budgets(positive, negative, ratio, min_negatives):
    return [min(max(int(ratio * int(p.sum())), min_negatives), int(n.sum()))
            for p, n in zip(positive, negative)]


@pytest.mark.parametrize('temperature', [0.05, 1.0, 7.0])
@pytest.mark.parametrize('ratio,min_negatives', [(3, 0), (1.5, 8)])
def test_batched_weights_equal_a_per_image_loop(temperature, ratio, min_negatives):
    losses, positive, negative = _problem(int(temperature * 100) + min_negatives)
    weights = soft_negative_weights(losses, positive, negative, neg_pos_ratio=ratio,
                                    temperature=temperature, min_negatives=min_negatives)
    budgets = _budgets(positive, negative, ratio, min_negatives)
    for b, budget in enumerate(budgets):
        expected = soft_weights_of_image(losses[b].tolist(), negative[b].tolist(), budget,
                                    temperature)
        expected = torch.tensor(expected)
        weighed = weights[b] > 0
        torch.testing.assert_close(weights[b][weighed], expected[weighed], rtol=1e-5, atol=1e-6)
        # the far tail left at 0 holds at most 1e-4 of the budget, and only the tail
        assert float(expected[~weighed].sum()) <= 1e-4 * budget
        if weighed.any():
            dropped = expected[~weighed & negative[b]]
            assert dropped.numel() == 0 or float(dropped.max()) <= float(weights[b][weighed].min())


@pytest.mark.parametrize('temperature', [1e-3, 0.3, 1.0, 30.0, 1e6, float('inf')])
@pytest.mark.parametrize('ratio,min_negatives', [(3, 0), (3, 25), (0.5, 2)])
def test_each_image_spends_the_hard_mining_budget(temperature, ratio, min_negatives):
    losses, positive, negative = _problem(3)
    weights = soft_negative_weights(losses, positive, negative, neg_pos_ratio=ratio,
                                    temperature=temperature, min_negatives=min_negatives)
    hard = hard_negative_mask(losses, positive, negative, ratio, min_negatives)
    budgets = torch.tensor(_budgets(positive, negative, ratio, min_negatives), dtype=torch.float)
    assert torch.equal(hard.sum(1).float(), budgets)
    torch.testing.assert_close(weights.sum(1), budgets, rtol=1e-4, atol=1e-4)
    assert ((weights >= 0) & (weights <= 1)).all()
    assert not weights[~negative].any(), 'positives and ignored anchors get no weight'


def test_temperature_zero_is_hard_mining_and_small_temperatures_tend_to_it():
    losses, positive, negative = _problem(4)
    hard = hard_negative_mask(losses, positive, negative, 3.0, 5)
    exact = soft_negative_weights(losses, positive, negative, neg_pos_ratio=3.0,
                                  temperature=0.0, min_negatives=5)
    assert exact.dtype == torch.float32 and torch.equal(exact, hard.float())
    largest_budget = int(hard.sum(1).max())
    for temperature in (1e-2, 1e-4, 1e-6):
        # the edge is temperature * K ranks wide: the last kept and first dropped negatives
        # are off by about ln 2 of that
        near = soft_negative_weights(losses, positive, negative, neg_pos_ratio=3.0,
                                     temperature=temperature, min_negatives=5)
        error = (near - hard.float()).abs().max()
        assert error <= temperature * largest_budget
    assert error < 1e-3


def test_large_temperatures_spread_the_budget_evenly():
    losses, positive, negative = _problem(5)
    budgets = torch.tensor(_budgets(positive, negative, 3.0, 0), dtype=torch.float)
    uniform = torch.where(negative, (budgets / negative.sum(1)).unsqueeze(1), 0.0)
    torch.testing.assert_close(soft_negative_weights(
        losses, positive, negative, temperature=float('inf')), uniform)
    torch.testing.assert_close(soft_negative_weights(
        losses, positive, negative, temperature=1e7), uniform, rtol=1e-4, atol=1e-6)
    spread = soft_negative_weights(losses, positive, negative, temperature=30.0)
    with_budget = budgets > 0
    assert (spread[with_budget][negative[with_budget]] > 0).all()
    assert not spread[~with_budget].any()


@pytest.mark.parametrize('temperature', [0.1, 2.0])
def test_weights_fall_with_the_loss(temperature):
    losses, positive, negative = _problem(6)
    weights = soft_negative_weights(losses, positive, negative, temperature=temperature)
    for b in range(losses.shape[0]):
        order = losses[b][negative[b]].argsort(descending=True)
        ranked = weights[b][negative[b]][order]
        assert (ranked[1:] <= ranked[:-1]).all()
    # an image whose budget is partial has weights strictly between 0 and 1
    assert ((weights[3] > 0.01) & (weights[3] < 0.99)).any()


def test_no_gradient_flows_into_the_weights():
    losses, positive, negative = _problem(7)
    losses.requires_grad_(True)
    weights = soft_negative_weights(losses, positive, negative)
    assert not weights.requires_grad and weights.grad_fn is None


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_losses_give_finite_weights_on_budget(dtype):
    losses, positive, negative = _problem(8)
    losses = (losses * 2e4).to(dtype)  # large enough to overflow if squared or exponentiated
    weights = soft_negative_weights(losses, positive, negative, temperature=0.5)
    assert weights.dtype == torch.float32 and torch.isfinite(weights).all()
    budgets = torch.tensor(_budgets(positive, negative, 3.0, 0), dtype=torch.float)
    torch.testing.assert_close(weights.sum(1), budgets, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(temperature=-1.0), r'temperature=-1.0; allowed: a number >= 0'),
    (dict(temperature=float('nan')), r'temperature=nan'),
    (dict(neg_pos_ratio=0.0), r'neg_pos_ratio=0.0; allowed: a number > 0'),
    (dict(min_negatives=-2), r'min_negatives=-2; allowed: an int >= 0'),
])
def test_bad_arguments_name_themselves(kwargs, match):
    losses, positive, negative = _problem(9)
    with pytest.raises(ValueError, match=match):
        soft_negative_weights(losses, positive, negative, **kwargs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(mode='soft', temperature=-0.5), r"temperature=-0.5; allowed: a number >= 0"),
    (dict(mode='hard_negative', temperature=1.0), r"temperature=1.0 applies to mode='soft'"),
    (dict(mode='softer'), r"mode='softer'; allowed: \('hard_negative', 'soft', 'ohem'\)"),
])
def test_sampler_rejects_bad_soft_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TASK_UTILS.build(dict(type='HardNegativeSampler', **kwargs))


def test_sampler_soft_mode_keeps_positives_and_never_weights_ignored_anchors():
    losses, positive, negative = _problem(10)
    labels = torch.where(positive, 2, 6)
    ignored = ~positive & ~negative
    label_weights = (~ignored).float()
    sampler = TASK_UTILS.build(dict(type='HardNegativeSampler', mode='soft', temperature=2.0,
                                    min_neg_per_image=3))
    weights = sampler.select(losses, labels, label_weights, torch.zeros(*losses.shape, 4), 6)
    assert torch.equal(weights[positive], torch.ones(int(positive.sum())))
    assert not weights[ignored].any()
    expected = soft_negative_weights(losses, positive, negative, temperature=2.0,
                                     min_negatives=3)
    torch.testing.assert_close(weights[negative], expected[negative], rtol=0, atol=0)
