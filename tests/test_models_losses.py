"""MMDetection adapters: registry, mmdet parity, and swapping RetinaNet's loss_cls."""
import copy

import pytest
import reference as ref
import torch
from helpers import det_batch, mmdet_config
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS

import plugin  # noqa: F401  (registers the plugin)

NAMES = ['SigmoidFocalLoss', 'SoftmaxFocalLoss', 'FocalLossStar', 'PolyFocalLoss',
         'EqualizedFocalLoss']


@pytest.mark.parametrize('name', NAMES)
def test_each_name_builds_from_the_registry(name):
    extra = dict(num_classes=3) if name == 'EqualizedFocalLoss' else {}
    loss = MODELS.build(dict(type=name, **extra))
    assert type(loss).__name__ == name and type(loss).__module__.startswith('plugin.')


def _logits_labels(n=64, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, c + 1, (n,), generator=g)
    return x, labels


@pytest.mark.parametrize('one_hot', [False, True])
@pytest.mark.parametrize('weight_kind', [None, 'anchor', 'element'])
@pytest.mark.parametrize('avg_factor', [None, 7.0])
def test_sigmoid_focal_equals_mmdet_focal_loss(one_hot, weight_kind, avg_factor):
    x, labels = _logits_labels()
    target = labels
    if one_hot:
        target = torch.nn.functional.one_hot(labels, 6)[:, :5]
    weight = {None: None, 'anchor': torch.rand(64, dtype=torch.float64),
              'element': torch.rand(64, 5, dtype=torch.float64)}[weight_kind]
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = MODELS.build(dict(type='SigmoidFocalLoss', loss_weight=2.0))(
        ours_x, target, weight, avg_factor=avg_factor)
    theirs = FocalLoss(loss_weight=2.0)(theirs_x, target, weight, avg_factor=avg_factor)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize('logits,labels,expected', [
    ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 0.13562961),
    ([[1.0, 0.0, -1.0], [0.0, 1.0, 2.0]], [2, 1], 1.10251057),
])
def test_mmcv_published_vectors(logits, labels, expected):
    """mmcv's sigmoid_focal_loss test vectors: gamma=2, alpha=0.25, mean over rows."""
    x = torch.tensor(logits)
    loss = MODELS.build(dict(type='SigmoidFocalLoss'))(x, torch.tensor(labels),
                                                      avg_factor=x.shape[0])
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('reduction', ['mean', 'none'])
def test_efl_buffers_accumulate_gradient_statistics(reduction):
    loss_fn = MODELS.build(dict(type='EqualizedFocalLoss', num_classes=5)).train()
    x, labels = _logits_labels()
    x = x.float().requires_grad_()
    if reduction == 'mean':
        loss_fn(x, labels, avg_factor=10.0).backward()
    else:  # an elementwise loss recomputes the gradient in backward
        (loss_fn(x, labels, reduction_override='none') * 0.3).sum().backward()
    # The float64 formula's gradient (no statistics yet: every gamma_j = gamma_b = 2).
    t = torch.nn.functional.one_hot(labels, 6)[:, :5].double()
    x64 = x.detach().double().requires_grad_()
    formula = ref.equalized_focal(x64, t, torch.full((5,), 2.0, dtype=torch.float64))
    scale = 1 / (10.0 + torch.finfo(torch.float32).eps) if reduction == 'mean' else 0.3
    (g,) = torch.autograd.grad(formula.sum() * scale, x64)
    torch.testing.assert_close(loss_fn.pos_grad.double(), (g.abs() * t).sum(0), rtol=1e-5,
                               atol=1e-9)
    torch.testing.assert_close(loss_fn.neg_grad.double(), (g.abs() * (1 - t)).sum(0),
                               rtol=1e-5, atol=1e-9)
    assert set(loss_fn.state_dict()) == {'pos_grad', 'neg_grad'}
    # after a step, rare classes (fewer positives) focus harder
    gammas = loss_fn.class_gammas()
    ratio = (loss_fn.pos_grad / loss_fn.neg_grad).clamp(0, 1)
    torch.testing.assert_close(gammas, 2.0 + 8.0 * (1 - ratio))


@pytest.mark.parametrize('cfg,match', [
    (dict(type='SigmoidFocalLoss', gamma=-0.5), 'gamma=-0.5'),
    (dict(type='SigmoidFocalLoss', alpha=2.0), 'alpha=2.0'),
    (dict(type='SigmoidFocalLoss', reduction='avg'), "reduction='avg'"),
    (dict(type='SigmoidFocalLoss', use_sigmoid=False), 'use SoftmaxFocalLoss'),
    (dict(type='SoftmaxFocalLoss', use_sigmoid=True), 'use SigmoidFocalLoss'),
    (dict(type='FocalLossStar', gamma=0), 'gamma=0.0'),
    (dict(type='EqualizedFocalLoss', num_classes=3, alpha=[0.1, 0.2]), '2 values'),
    (dict(type='EqualizedFocalLoss', num_classes=0), 'num_classes=0'),
])
def test_bad_config_is_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(cfg)


def test_sum_with_avg_factor_is_refused():
    x, labels = _logits_labels()
    with pytest.raises(ValueError, match='avg_factor'):
        MODELS.build(dict(type='SigmoidFocalLoss', reduction='sum'))(x, labels, avg_factor=2)


SWAPS = {
    'SigmoidFocalLoss': dict(type='SigmoidFocalLoss', gamma=2.0, alpha=0.25),
    'SoftmaxFocalLoss': dict(_delete_=True, type='SoftmaxFocalLoss', gamma=2.0, alpha=0.25),
    'FocalLossStar': dict(type='FocalLossStar', gamma=2.0, beta=1.0),
    'PolyFocalLoss': dict(type='PolyFocalLoss', epsilon=1.0),
    'EqualizedFocalLoss': dict(_delete_=True, type='EqualizedFocalLoss', use_sigmoid=True,
                               num_classes=80),
}


@pytest.fixture(scope='module')
def retinanet_cfg():
    cfg = mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    return cfg


@pytest.mark.parametrize('name', SWAPS)
def test_stock_retinanet_trains_with_each_variant(retinanet_cfg, name):
    from mmengine.config import Config
    cfg = Config(copy.deepcopy(retinanet_cfg._cfg_dict.to_dict()))
    cfg.merge_from_dict(dict(model=dict(bbox_head=dict(loss_cls=SWAPS[name]))))
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.bbox_head.loss_cls).__name__ == name
    batch = model.data_preprocessor(det_batch([3, 0], 128), training=True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(sum(v) for v in losses.values())  # RetinaHead: one loss per level
    total.backward()
    assert torch.isfinite(total)
    grad = model.bbox_head.retina_cls.weight.grad
    assert grad is not None and grad.abs().sum() > 0
