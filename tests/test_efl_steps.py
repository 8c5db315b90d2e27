"""EqualizedFocalLoss over two training steps, on the readable and the compiled path, called
as the mining head calls it (``reduction_override='none'``, per-row weights, then a sum over a
normalizer): its buffers must hold the summed float64 gradient magnitudes of both steps, the
second step must use the focusing parameters those buffers give, and ``eval()`` must leave
them alone.
"""
import pytest
import torch
from mmdet.registry import MODELS

import plugin  # noqa: F401
from plugin.ops import fast
import reference as ref

NUM_CLASSES = 4
GAMMA_B, SCALE, ALPHA = 2.0, 8.0, 0.25
NORMALIZER = 7.0


def _gammas(pos_grad, neg_grad):
    """gamma_j = gamma_b + s (1 - g_j), g_j = pos_j / neg_j clipped to [0, 1] (1 without
    statistics): the EFL paper's rule, float64."""
    ratio = torch.where(neg_grad > 0, pos_grad / neg_grad.clamp(min=1e-300), 1.0).clamp(0, 1)
    return GAMMA_B + SCALE * (1 - ratio)


def _problem(step):
    """Logits, labels (class 0 common, class 3 rare) and per-row weights
    with ignored rows (weight 0) and soft ones."""
    g = torch.Generator().manual_seed(step)
    num_rows = 400
    x = torch.randn(num_rows, NUM_CLASSES, generator=g) * 2
    labels = torch.multinomial(torch.tensor([0.4, 0.1, 0.03, 0.01, 0.46]), num_rows,
                               replacement=True, generator=g)
    weights = torch.rand(num_rows, generator=g)
    weights[torch.rand(num_rows, generator=g) < 0.2] = 0
    return x, labels, weights


def _compiled(family):
    return any(name.startswith(family) and report['compile_seconds']
               for name, report in fast.kernel_report().items())


def _ours(loss_fn, x, labels, weights, step):
    """Step 0: the weights passed to the loss (the mining head's call); step 1: applied to
    the unreduced loss afterwards."""
    if step == 0:
        per_entry = loss_fn(x, labels, weights, reduction_override='none')
    else:
        per_entry = loss_fn(x, labels, reduction_override='none') * weights[:, None]
    return per_entry.sum() / NORMALIZER


@pytest.mark.parametrize('path', ['readable', 'compiled'])
def test_efl_statistics_and_focusing_over_two_steps(path, request):
    if path == 'compiled':
        request.getfixturevalue('compiled')
    loss_fn = MODELS.build(dict(type='EqualizedFocalLoss', num_classes=NUM_CLASSES,
                                gamma_b=GAMMA_B, scale_factor=SCALE, alpha=ALPHA)).train()
    pos_grad = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    neg_grad = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for step in range(2):
        x, labels, weights = _problem(step)
        gammas = _gammas(pos_grad, neg_grad)  # from the statistics of the steps before
        logits = x.clone().requires_grad_()
        loss = _ours(loss_fn, logits, labels, weights, step)
        loss.backward()
        x64 = x.double().requires_grad_()
        targets = ref.one_hot(labels, NUM_CLASSES)
        loss64 = (ref.equalized_focal(x64, targets, gammas, GAMMA_B, ALPHA)
                  * weights.double()[:, None]).sum() / NORMALIZER
        (grad64,) = torch.autograd.grad(loss64, x64)
        torch.testing.assert_close(loss.double(), loss64.detach(), rtol=1e-5, atol=0)
        torch.testing.assert_close(logits.grad.double(), grad64, rtol=1e-5, atol=1e-9)
        pos_grad += (grad64.abs() * targets).sum(0)
        neg_grad += (grad64.abs() * (1 - targets)).sum(0)
        torch.testing.assert_close(loss_fn.pos_grad.double(), pos_grad, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(loss_fn.neg_grad.double(), neg_grad, rtol=1e-5, atol=1e-9)
    # The second step really focused the classes differently (rare ones harder).
    assert float(gammas.max() - gammas.min()) > 0.5 and int(gammas.argmax()) == 3
    if path == 'compiled':
        assert _compiled('equalized_focal')
    # Evaluation: a forward and backward that leave the statistics as they are.
    pos_before, neg_before = loss_fn.pos_grad.clone(), loss_fn.neg_grad.clone()
    loss_fn.eval()
    x, labels, weights = _problem(2)
    _ours(loss_fn, x.requires_grad_(), labels, weights, step=0).backward()
    assert torch.equal(loss_fn.pos_grad, pos_before) and torch.equal(loss_fn.neg_grad, neg_before)
