"""Initialisation of every plugin head in both modes: a sigmoid classifier starts every anchor
at the focal-loss prior p = 0.01 (sigmoid(bias) = 0.01, the paper's section 4.1); a softmax
one is initialised exactly as mmdet's own head with the same seed."""
import copy
import math
from pathlib import Path

import pytest
import torch
from helpers import mmdet_config
from mmdet.registry import MODELS
from mmengine.config import Config

import plugin  # noqa: F401

NUM_CLASSES = 5
PRIOR = 0.01
SIGMOID_LOSSES = {
    'SigmoidFocalLoss': dict(type='SigmoidFocalLoss', use_sigmoid=True),
    'EqualizedFocalLoss': dict(type='EqualizedFocalLoss', num_classes=NUM_CLASSES,
                               use_sigmoid=True),
}
CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'


def _head_cfgs(kind):
    """(mmdet's head, the plugin's head) configs, small."""
    if kind == 'retina':
        cfg = mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py')
        stock = copy.deepcopy(cfg.model.bbox_head)
        stock.update(in_channels=8, feat_channels=8, stacked_convs=1)
    else:
        cfg = mmdet_config('ssd/ssd300_coco.py')
        stock = copy.deepcopy(cfg.model.bbox_head)
        stock.update(in_channels=(8,) * 6)
    stock.update(num_classes=NUM_CLASSES, train_cfg=cfg.model.train_cfg,
                 test_cfg=cfg.model.test_cfg)
    ours = copy.deepcopy(stock)
    ours.type = 'MiningRetinaHead' if kind == 'retina' else 'MiningSSDHead'
    return stock, ours


def _initialised(cfg):
    torch.manual_seed(0)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def _classifiers(head):
    return [head.retina_cls] if hasattr(head, 'retina_cls') else [b[-1] for b in head.cls_convs]


def _assert_prior(head):
    for conv in _classifiers(head):
        p = torch.sigmoid(conv.bias.double())
        torch.testing.assert_close(p, torch.full_like(p, PRIOR), rtol=1e-6, atol=0)


@pytest.mark.parametrize('loss', SIGMOID_LOSSES)
@pytest.mark.parametrize('kind', ['retina', 'ssd'])
def test_sigmoid_heads_start_at_the_prior(kind, loss):
    _, ours = _head_cfgs(kind)
    ours.loss_cls = SIGMOID_LOSSES[loss]
    head = _initialised(ours)
    assert head.cls_out_channels == NUM_CLASSES
    _assert_prior(head)


@pytest.mark.parametrize('kind', ['retina', 'ssd'])
def test_softmax_heads_are_initialised_as_mmdets(kind):
    stock, ours = _head_cfgs(kind)
    if kind == 'retina':  # RetinaNet is a sigmoid head in mmdet: softmax on request
        stock.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=False)
        ours.loss_cls = dict(type='SoftmaxFocalLoss', gamma=2.0, alpha=0.25)
    else:  # MiningSSDHead's default loss, softmax cross entropy, as SSDHead's
        assert 'loss_cls' not in ours
    theirs, mine = _initialised(stock), _initialised(ours)
    assert mine.cls_out_channels == theirs.cls_out_channels == NUM_CLASSES + 1
    their_state = theirs.state_dict()
    for name, value in mine.state_dict().items():
        if name.startswith('loss_'):  # the plugin's loss modules may hold buffers
            continue
        torch.testing.assert_close(value, their_state[name], rtol=0, atol=0, msg=name)


def test_ssd300_focal_config_starts_at_the_prior_through_the_detector():
    # The whole detector's init_weights, as the Runner calls it.
    cfg = Config.fromfile(str(CONFIG_DIR / 'ssd' / 'ssd300_coco_focal.py')).model
    cfg.backbone.init_cfg = None
    cfg.bbox_head.num_classes = NUM_CLASSES
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    for conv in _classifiers(model.bbox_head):
        bias = conv.bias.double()
        assert bias.numel() % NUM_CLASSES == 0
        torch.testing.assert_close(bias, torch.full_like(bias, math.log(PRIOR / (1 - PRIOR))),
                                   rtol=1e-6, atol=0)
