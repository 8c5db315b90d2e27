"""Numerics of the losses and of the heads with every sampler, at the edges of their inputs:
bf16 autocast on CPU, logits of +-1e4, images without boxes (no positives anywhere), every
anchor ignored. Nothing may turn into inf / NaN, and the loss is never divided by ~0.
"""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import det_batch, img_metas, random_gt
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import plugin  # noqa: F401
import reference as ref

QUICKSTART = 'configs/quickstart/retinanet_r18_quickstart.py'
NUM_CLASSES = 6
SIZE = 64

# The loss-ranked modes of HardNegativeSampler; a new mode joins every head test here.
MINING_MODES = ('hard_negative', 'soft', 'ohem')
SAMPLERS = {'pseudo': dict(type='PseudoSampler'),
            **{mode: dict(type='HardNegativeSampler', mode=mode) for mode in MINING_MODES}}

LOSSES = {
    'SigmoidFocalLoss': dict(type='SigmoidFocalLoss'),
    'PolyFocalLoss': dict(type='PolyFocalLoss'),
    'FocalLossStar': dict(type='FocalLossStar'),
    'EqualizedFocalLoss': dict(type='EqualizedFocalLoss', num_classes=NUM_CLASSES),
}


@pytest.fixture(scope='module')
def model_cfg(request) -> Config:
    """The quick-start RetinaNet (ResNet-18 at half width) with the plugin's head."""
    cfg = Config.fromfile(str(request.config.rootpath / QUICKSTART)).model
    cfg.bbox_head.type = 'MiningRetinaHead'
    return cfg


def _build(model_cfg: Config, sampler: str, loss_cls: dict | None = None, **sampler_args):
    cfg = copy.deepcopy(model_cfg)
    cfg.train_cfg.sampler = dict(SAMPLERS[sampler], **sampler_args)
    if loss_cls is not None:
        cfg.bbox_head.loss_cls = dict(loss_cls, use_sigmoid=True)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _total(losses: dict) -> torch.Tensor:
    """Each loss may be a list (per level or image), as the stock heads return them."""
    return sum(sum(value) if isinstance(value, list) else value for value in losses.values())


def _assert_finite_step(losses: dict, params) -> torch.Tensor:
    total = _total(losses)
    total.backward()
    assert torch.isfinite(total), losses
    for name, param in params:
        assert param.grad is None or torch.isfinite(param.grad).all(), name
    return total


@pytest.mark.parametrize('sampler', SAMPLERS)
def test_bf16_autocast_training_steps_are_finite(model_cfg, sampler):
    model = _build(model_cfg, sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = model.data_preprocessor(det_batch([3, 0], SIZE, NUM_CLASSES), training=True)
    with torch.no_grad():
        float32 = _total(model.loss(batch['inputs'], batch['data_samples']))
    for _ in range(2):
        optimizer.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            losses = model.loss(batch['inputs'], batch['data_samples'])
        total = _assert_finite_step(losses, model.named_parameters())
        optimizer.step()
        if _ == 0:  # bf16 keeps ~3 significant digits through a ResNet and FPN
            assert float(total.detach()) == pytest.approx(float(float32), rel=0.1)
    assert all(torch.isfinite(param).all() for param in model.parameters())


@pytest.mark.parametrize('loss', LOSSES)
def test_bf16_autocast_step_of_each_loss_is_finite(model_cfg, loss):
    model = _build(model_cfg, 'pseudo', LOSSES[loss])
    batch = model.data_preprocessor(det_batch([3, 1], SIZE, NUM_CLASSES), training=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(batch['inputs'], batch['data_samples'])
    _assert_finite_step(losses, model.named_parameters())


def _head_inputs(head, num_images: int, fill=None, seed: int = 0):
    """Random scores and box deltas for a SIZE x SIZE batch; scores set to ``fill(shape)``."""
    g = torch.Generator().manual_seed(seed)
    sizes = [SIZE // stride_w for stride_w, _ in head.prior_generator.strides]
    anchors = head.num_base_priors
    scores = [(fill((num_images, anchors * head.cls_out_channels, s, s), g) if fill
               else torch.randn(num_images, anchors * head.cls_out_channels, s, s, generator=g))
              .requires_grad_() for s in sizes]
    deltas = [torch.randn(num_images, anchors * 4, s, s, generator=g).mul(0.1).requires_grad_()
              for s in sizes]
    return scores, deltas


def _signed_1e4(shape, g):
    return torch.where(torch.rand(shape, generator=g) < 0.5, -1e4, 1e4)


@pytest.mark.parametrize('sampler', SAMPLERS)
@pytest.mark.parametrize('fill', [_signed_1e4, lambda shape, g: torch.full(shape, 1e4),
                                  lambda shape, g: torch.full(shape, -1e4)],
                         ids=['mixed', 'all+1e4', 'all-1e4'])
def test_logits_of_1e4_give_finite_losses_and_gradients(model_cfg, sampler, fill):
    head = _build(model_cfg, sampler).bbox_head
    scores, deltas = _head_inputs(head, 2, fill)
    gts = [random_gt(3, NUM_CLASSES, SIZE), random_gt(1, NUM_CLASSES, SIZE)]
    losses = head.loss_by_feat(scores, deltas, gts, img_metas(2, SIZE))
    _assert_finite_step(losses, [('scores', s) for s in scores] + [('deltas', d) for d in deltas])


def _negative_only_focal_sum(scores: list[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Float64 sigmoid focal loss of every anchor as background, summed (reference.py)."""
    logits = torch.cat([s.detach().double().permute(0, 2, 3, 1).reshape(-1, num_classes)
                        for s in scores])
    return ref.sigmoid_focal(logits, torch.zeros_like(logits)).sum()


@pytest.mark.parametrize('sampler', SAMPLERS)
def test_a_batch_without_any_box_is_normalized_by_at_least_one_per_image(model_cfg, sampler):
    # Mining keeps some negatives of images without objects only when asked to.
    mining = {} if sampler == 'pseudo' else dict(min_neg_per_image=16)
    head = _build(model_cfg, sampler, **mining).bbox_head
    scores, deltas = _head_inputs(head, 2)
    gts = [random_gt(0, NUM_CLASSES, SIZE), random_gt(0, NUM_CLASSES, SIZE)]
    losses = head.loss_by_feat(scores, deltas, gts, img_metas(2, SIZE))
    _assert_finite_step(losses, [('scores', s) for s in scores])
    assert float(sum(losses['loss_bbox'])) == 0
    # No positives: mmdet counts at least one per image, never ~0 (sum / eps would be ~1e7x).
    every_anchor = float(_negative_only_focal_sum(scores, NUM_CLASSES)) / 2
    assert 0 < float(sum(losses['loss_cls'])) <= every_anchor * (1 + 1e-5)
    if sampler == 'pseudo':  # every anchor is a negative, all of them count
        assert float(sum(losses['loss_cls'])) == pytest.approx(every_anchor, rel=1e-5)


@pytest.mark.parametrize('sampler', SAMPLERS)
def test_every_anchor_ignored_gives_zero_losses_and_gradients(model_cfg, sampler):
    cfg = copy.deepcopy(model_cfg)
    cfg.train_cfg.assigner.ignore_iof_thr = 0.5
    cfg.train_cfg.sampler = SAMPLERS[sampler]
    head = MODELS.build(cfg).bbox_head
    scores, deltas = _head_inputs(head, 2)
    gts = [random_gt(2, NUM_CLASSES, SIZE), random_gt(1, NUM_CLASSES, SIZE)]
    everywhere = InstanceData(bboxes=torch.tensor([[-1e3, -1e3, 1e3, 1e3]]))
    losses = head.loss_by_feat(scores, deltas, gts, img_metas(2, SIZE),
                               batch_gt_instances_ignore=[everywhere, everywhere])
    _assert_finite_step(losses, [('scores', s) for s in scores] + [('deltas', d) for d in deltas])
    assert float(sum(losses['loss_cls'])) == 0 and float(sum(losses['loss_bbox'])) == 0
    for tensor in scores + deltas:
        assert tensor.grad is None or not tensor.grad.any()


# ----------------------------------------------------------------- the loss modules alone
def _labels(num_rows: int, positives: bool) -> torch.Tensor:
    labels = torch.full((num_rows,), NUM_CLASSES)
    if positives:
        labels[::3] = torch.arange(0, num_rows, 3) % NUM_CLASSES
    return labels


@pytest.mark.parametrize('loss', [*LOSSES, 'SoftmaxFocalLoss'])
@pytest.mark.parametrize('positives', [True, False], ids=['positives', 'background-only'])
def test_loss_modules_at_1e4_and_with_all_weights_zero(loss, positives):
    cfg = dict(type='SoftmaxFocalLoss') if loss == 'SoftmaxFocalLoss' else LOSSES[loss]
    module = MODELS.build(cfg).train()
    outputs = NUM_CLASSES + (loss == 'SoftmaxFocalLoss')
    labels = _labels(12, positives)
    logits = _signed_1e4((12, outputs), torch.Generator().manual_seed(0)).requires_grad_()
    value = module(logits, labels, avg_factor=max(int((labels < NUM_CLASSES).sum()), 1))
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    # Every anchor ignored: zero, with a zero (not NaN) gradient, even with avg_factor 0.
    zero = module(logits, labels, torch.zeros(12), avg_factor=0)
    (grad,) = torch.autograd.grad(zero, logits)
    assert float(zero) == 0 and not grad.any()
