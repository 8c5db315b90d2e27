"""``SigmoidFocalLoss(activated=True)``: probabilities in, mmdet's ``FocalLoss(activated=True)``
numbers out (mmdet's own code is the reference), and TOOD's config builds and trains with it."""
import copy

import pytest
import torch
from helpers import det_batch, mmdet_config
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS
from mmengine.logging import MessageHub

import plugin  # noqa: F401
from plugin.models.losses import SigmoidFocalLoss


def _probabilities_labels(n=64, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Spread from ~1e-6 to 1 - 1e-6: both tails of the sigmoid.
    p = torch.sigmoid(torch.randn(n, c, generator=g, dtype=torch.float64) * 5)
    return p, torch.randint(0, c + 1, (n,), generator=g)


@pytest.mark.parametrize('one_hot', [False, True])
@pytest.mark.parametrize('weight_kind', [None, 'anchor', 'element'])
@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('mean', 7.0), ('sum', None),
                                                  ('none', None)])
@pytest.mark.parametrize('alpha,gamma', [(0.25, 2.0), (0.5, 0.0), (0.75, 1.5)])
def test_activated_equals_mmdet_focal_loss(one_hot, weight_kind, reduction, avg_factor, alpha,
                                           gamma):
    p, labels = _probabilities_labels()
    target = torch.nn.functional.one_hot(labels, 6)[:, :5] if one_hot else labels
    weight = {None: None, 'anchor': torch.rand(64, dtype=torch.float64),
              'element': torch.rand(64, 5, dtype=torch.float64)}[weight_kind]
    ours_p, theirs_p = p.clone().requires_grad_(), p.clone().requires_grad_()
    kwargs = dict(gamma=gamma, alpha=alpha, reduction=reduction, loss_weight=2.0)
    ours = SigmoidFocalLoss(activated=True, **kwargs)(ours_p, target, weight,
                                                      avg_factor=avg_factor)
    theirs = FocalLoss(activated=True, **kwargs)(theirs_p, target, weight,
                                                 avg_factor=avg_factor)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    r = torch.rand_like(ours)
    (ours_grad,) = torch.autograd.grad((ours * r).sum(), ours_p)
    (theirs_grad,) = torch.autograd.grad((theirs * r).sum(), theirs_p)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-7, atol=1e-9)


def test_activated_float32_matches_mmdet_and_saturated_probabilities_stay_finite():
    p, labels = _probabilities_labels()
    ours = SigmoidFocalLoss(activated=True)(p.float(), labels)
    theirs = FocalLoss(activated=True)(p.float(), labels)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    # Probabilities of exactly 0 and 1, right and wrong: a finite loss and gradient.
    saturated = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss = SigmoidFocalLoss(activated=True)(saturated, torch.tensor([0, 2]))
    (grad,) = torch.autograd.grad(loss, saturated)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_activated_refuses_logits_and_non_booleans():
    with pytest.raises(ValueError, match=r'activated=True\) takes probabilities in \[0, 1\]'):
        SigmoidFocalLoss(activated=True)(torch.tensor([[2.5, -1.0]]), torch.tensor([0]))
    with pytest.raises(TypeError, match='activated=.yes.; allowed: True'):
        SigmoidFocalLoss(activated='yes')


def test_tood_config_trains_with_it_as_with_mmdet_focal_loss():
    cfg = mmdet_config('tood/tood_r50_fpn_1x_coco.py').model
    cfg.backbone.init_cfg = None
    MessageHub.get_current_instance().update_info('epoch', 0)  # TOOD's initial-loss epochs
    losses = {}
    for loss_type in ('FocalLoss', 'SigmoidFocalLoss'):
        variant = copy.deepcopy(cfg)
        variant.bbox_head.initial_loss_cls.type = loss_type
        torch.manual_seed(0)
        model = MODELS.build(variant)
        model.init_weights()
        batch = model.data_preprocessor(det_batch([3, 1], 128), training=True)
        losses[loss_type] = model.loss(batch['inputs'], batch['data_samples'])
    assert type(model.bbox_head.initial_loss_cls) is SigmoidFocalLoss
    theirs, ours = losses['FocalLoss'], losses['SigmoidFocalLoss']
    assert set(ours) == set(theirs)
    for key in ours:
        torch.testing.assert_close(sum(ours[key]), sum(theirs[key]), rtol=1e-5, atol=1e-7)
