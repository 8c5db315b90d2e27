"""The heads on the compiled kernels, the path users train on (``PLUGIN_COMPILE=strict``: a
kernel that falls back to eager fails the test): the mining heads against their per-image
float64 loops, a bf16 autocast step against mmdet's head in float64, and two runs of two
steps that must agree bit for bit.

A few cases only: each kernel and signature compiles once per process (seconds each), and the
readable path runs every case in test_mining_heads.py and test_head_parity.py.
"""
import pytest
import torch
import test_mining_heads as mining
from helpers import random_gt
from test_head_parity import LEVEL_SIZES, SIZE, retina_heads, retina_step_inputs

from plugin.ops import fast


def _compiled_kernels() -> set[str]:
    return {name for name, report in fast.kernel_report().items() if report['compile_seconds']}


# One mining mode each; the retina heads share one compiled loss (sigmoid cross entropy).
@pytest.mark.parametrize('kind,name', [('retina', 'hard-1to3'), ('retina', 'soft-t0.3'),
                                       ('retina', 'ohem-ratio-min')])
def test_compiled_mining_heads_equal_the_per_image_loop(compiled, kind, name):
    mining.test_mining_head_losses_and_normalizer_equal_a_per_image_loop(kind, name)
    assert 'sigmoid_focal.value' in _compiled_kernels(), 'the loss did not run compiled'


def test_compiled_bf16_autocast_step_matches_mmdet_in_float64(compiled):
    # The plugin's head under bf16 autocast computes its losses in float32 from the bf16
    # scores; mmdet's RetinaHead and FocalLoss in float64 on the same rounded scores are the
    # reference, value by value, and for the gradients to bf16's rounding.
    stock, ours = retina_heads()
    feats, gts, metas = retina_step_inputs(0)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.05)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        cls_scores, bbox_preds = ours(feats)
        for output in cls_scores + bbox_preds:
            output.retain_grad()
        losses = ours.loss_by_feat(cls_scores, bbox_preds, gts, metas)
    assert cls_scores[0].dtype == torch.bfloat16
    sum(map(sum, losses.values())).backward()
    outputs64 = [output.detach().double().requires_grad_() for output in cls_scores + bbox_preds]
    theirs = stock.loss_by_feat(outputs64[:len(LEVEL_SIZES)], outputs64[len(LEVEL_SIZES):], gts,
                                metas)
    grads64 = torch.autograd.grad(sum(map(sum, theirs.values())), outputs64)
    for key in ('loss_cls', 'loss_bbox'):
        torch.testing.assert_close(torch.stack(losses[key]).double(),
                                   torch.stack(theirs[key]).detach(), rtol=1e-5, atol=1e-9)
    for output, grad64 in zip(cls_scores + bbox_preds, grads64):
        assert output.grad.dtype == torch.bfloat16
        torch.testing.assert_close(output.grad.double(), grad64, rtol=2 ** -8, atol=1e-9)
    optimizer.step()
    assert all(torch.isfinite(param).all() for param in ours.parameters())
    kernels = (fast.SIGMOID_FOCAL.value, fast.SIGMOID_FOCAL.value_and_grad)
    assert any(signature[1] == torch.bfloat16 for kernel in kernels
               for signature in kernel._compiled), 'no bf16 kernel was compiled'


def _two_hard_mining_steps():
    """Losses, box-feature gradients and final weights of two SGD steps with hard mining."""
    torch.manual_seed(0)
    head = mining._head('retina', dict(type='HardNegativeSampler', neg_pos_ratio=3))
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    record = []
    for step in range(2):
        feats, gts, metas = retina_step_inputs(step)
        gts[0] = random_gt(6, mining.NUM_CLASSES, SIZE, torch.Generator().manual_seed(step))
        feats = [f.requires_grad_() for f in feats]
        optimizer.zero_grad()
        losses = head.loss_by_feat(*head(feats), gts, metas)
        sum(map(sum, losses.values())).backward()
        optimizer.step()
        record += [torch.stack(losses['loss_cls']).detach(),
                   torch.stack(losses['loss_bbox']).detach(), *(f.grad for f in feats)]
    return record + [p.detach().clone() for p in head.parameters()]


def test_compiled_training_steps_repeat_bit_for_bit(compiled):
    # The kernels of the per-image loop test above, compiled once: this costs two steps.
    first, second = _two_hard_mining_steps(), _two_hard_mining_steps()
    assert len(first) == len(second)
    for ours, again in zip(first, second):
        assert torch.equal(ours, again)
    assert first[0].sum() > 0 and first[1].sum() > 0
