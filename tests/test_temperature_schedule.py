"""The soft-mining temperature schedule: its values, the hook that applies it, its errors, and
that the reproduction scales carry it (and PISA's train_cfg) to the quick scale."""
import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MessageHub

from plugin.models import HardNegativeSampler, SoftMiningTemperatureHook
from plugin.models.hooks import scheduled_temperature
from plugin.repro.scales import ScaleOptions, build_run_config
from plugin.repro.suites import SuiteEntry

NEG = 'configs/negatives/retinanet_r18_quick_'


@pytest.mark.parametrize('step,total,expected', [
    (0, 600, 10.0), (150, 600, 5 * (1 + math.sqrt(0.5))), (300, 600, 5.0),
    (450, 600, 5 * (1 - math.sqrt(0.5))), (600, 600, 0.0), (700, 600, 0.0)])
def test_cosine_from_ten_to_zero(step, total, expected):
    assert scheduled_temperature(step, total, 10.0, 0.0) == pytest.approx(expected, abs=1e-12)
    # the reverse schedule mirrors it
    assert scheduled_temperature(step, total, 0.0, 10.0) == pytest.approx(10 - expected,
                                                                         abs=1e-12)


def test_linear_schedule():
    assert scheduled_temperature(150, 600, 8.0, 0.0, 'linear') == pytest.approx(6.0)


class _Head(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler


def _runner(sampler, step, total=600):
    model = torch.nn.Sequential(_Head(sampler))
    return SimpleNamespace(model=model, iter=step, max_iters=total,
                           message_hub=MessageHub.get_instance('temperature_schedule_test'))


def test_hook_sets_the_sampler_temperature_before_each_step():
    sampler = HardNegativeSampler(mode='soft', temperature=10.0)
    hook = SoftMiningTemperatureHook(start=10.0, end=0.0)
    hook.before_train(_runner(sampler, 0))
    last = 10 * (1 + math.cos(math.pi * 599 / 600)) / 2
    for step, expected in ((0, 10.0), (300, 5.0), (599, last)):
        runner = _runner(sampler, step)
        hook.before_train_iter(runner, batch_idx=step)
        assert sampler.temperature == pytest.approx(expected)
        logged = runner.message_hub.get_scalar('train/temperature').current()
        assert logged == pytest.approx(expected)


def test_hook_refuses_a_model_without_soft_mining():
    hook = SoftMiningTemperatureHook(start=10.0, end=0.0)
    with pytest.raises(ValueError, match="no HardNegativeSampler with mode='soft'"):
        hook.before_train(_runner(HardNegativeSampler(mode='hard_negative'), 0))


@pytest.mark.parametrize('kwargs,match', [
    (dict(start=-1.0, end=0.0), r'start=-1.0; allowed: a finite number >= 0'),
    (dict(start=1.0, end=float('inf')), r'end=inf; allowed'),
    (dict(start=1.0, end=0.0, schedule='step'), r"schedule='step'; allowed: \('cosine', "),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftMiningTemperatureHook(**kwargs)


def _quick(name):
    entry = SuiteEntry(f'{NEG}{name}.py', scales=('quick', 'coco128'))
    return build_run_config(entry, ScaleOptions(scale='quick', data_root='data/q'), seed=0)


def test_quick_scale_carries_the_schedule_hook_and_pisa_settings():
    hooks = _quick('ce_soft_t10_to_hard').custom_hooks
    assert [dict(h) for h in hooks] == [dict(type='SoftMiningTemperatureHook', start=10.0,
                                             end=0.0)]
    pisa = _quick('pisa')
    assert pisa.model.bbox_head.type == 'PISARetinaHead'
    assert dict(pisa.model.train_cfg.isr) == dict(k=2.0, bias=0.0)
    assert dict(pisa.model.train_cfg.carl) == dict(k=1.0, bias=0.2)
    assert dict(pisa.model.bbox_head.loss_bbox) == dict(type='SmoothL1Loss', beta=0.11,
                                                         loss_weight=1.0)
    assert pisa.model.bbox_head.reg_decoded_bbox is False


def test_quick_scale_keeps_its_own_anchors_and_schedule_under_a_quickstart_config():
    base = Config.fromfile('configs/_base_/quick_scale.py')
    for name in ('ce_hard1to3', 'ce_soft_t10_to_hard', 'focal', 'pisa'):
        cfg = _quick(name)
        assert cfg.model.bbox_head.anchor_generator.ratios == \
            base.model.bbox_head.anchor_generator.ratios
        assert cfg.train_cfg.max_iters == base.train_cfg.max_iters
    hard = _quick('ce_hard1to3')
    assert hard.model.bbox_head.type == 'MiningRetinaHead'
    assert dict(hard.model.train_cfg.sampler) == dict(type='HardNegativeSampler',
                                                       neg_pos_ratio=3)
    assert 'custom_hooks' not in hard
