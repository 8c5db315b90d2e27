"""Every file in configs/ loads, builds (init_cfg=None), trains one step and predicts.

The default run trains one config per distinct code path (head, loss, sampler mode); the
grid members that differ only in numbers run with ``-m slow``.
"""
from pathlib import Path

import pytest
import torch
from helpers import det_batch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmdet.registry import MODELS

from plugin.repro.scales import clear_init_cfg

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)


def _image_size(cfg):
    head = cfg.model.bbox_head
    return head.get('anchor_generator', {}).get('input_size', 96)


def _code_path(cfg):
    head, sampler = cfg.model.bbox_head, cfg.model.train_cfg.get('sampler', {})
    return (head.type, head.get('loss_cls', {}).get('type'), sampler.get('type'),
            sampler.get('mode'), sampler.get('neg_pos_ratio') is None, cfg.get('data_root'))


def _params():
    seen, params = set(), []
    for path in CONFIGS:
        key = _code_path(Config.fromfile(str(path)))
        marks = [pytest.mark.slow] if key in seen else []
        seen.add(key)
        params.append(pytest.param(path, marks=marks, id=str(path.relative_to(CONFIG_DIR))))
    return params


@pytest.mark.parametrize('path', _params())
def test_config_builds_trains_one_step_and_predicts(path):
    cfg = Config.fromfile(str(path))
    assert 'plugin' in cfg.custom_imports['imports']
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    clear_init_cfg(cfg.model)
    cfg.model.test_cfg.score_thr = 0.0
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    size = _image_size(cfg)
    num_classes = cfg.model.bbox_head.num_classes
    batch = model.data_preprocessor(det_batch([2, 0], size, num_classes), training=True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(v if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
    total.backward()
    assert torch.isfinite(total)
    model.eval()
    with torch.no_grad():
        results = model.test_step(det_batch([1, 0], size, num_classes, seed=1))
    assert len(results) == 2 and results[0].pred_instances.bboxes.shape[-1] == 4


def test_ssd512_builds_and_computes_its_losses_on_its_seven_levels():
    # The one config with a seventh feature level (an extra neck layer, its own anchors); its
    # training step runs with -m slow (VGG at 512 px: ~90 s on 2 cores), this in seconds.
    cfg = Config.fromfile(str(CONFIG_DIR / 'ssd' / 'ssd512_coco_mining.py'))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    clear_init_cfg(cfg.model)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    head = model.bbox_head
    num_levels = len(cfg.model.bbox_head.anchor_generator.strides)
    assert num_levels == 7 == len(head.cls_convs) == len(head.prior_generator.strides)
    batch = model.data_preprocessor(det_batch([2], _image_size(cfg), head.num_classes),
                                    training=True)
    with torch.no_grad():
        feats = model.extract_feat(batch['inputs'])
        cls_scores, bbox_preds = head(feats)
        losses = head.loss_by_feat(cls_scores, bbox_preds,
                                   [sample.gt_instances for sample in batch['data_samples']],
                                   [sample.metainfo for sample in batch['data_samples']])
    assert len(feats) == len(cls_scores) == num_levels
    # one score per anchor and output at every level
    anchors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores], device='cpu')
    assert [len(a) * head.cls_out_channels for a in anchors] == \
        [s[0].numel() for s in cls_scores]
    assert all(torch.isfinite(loss).all() for loss in losses['loss_cls'] + losses['loss_bbox'])
