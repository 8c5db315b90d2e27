"""``SoftMiningTemperatureHook``: the soft-mining temperature as a schedule over training.

Soft negative mining (``HardNegativeSampler(mode='soft')``) spreads each image's budget of
negatives over an edge ``temperature`` budgets wide: 0 is SSD's hard mining, large values an
even spread. The hook moves that temperature along a cosine from ``start`` to ``end`` over the
run's iterations, so one run can go from soft to hard mining (``start=10, end=0``) or back.
"""
from __future__ import annotations

import math
from typing import Any

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from .samplers import HardNegativeSampler

__all__ = ['SoftMiningTemperatureHook', 'scheduled_temperature']

SCHEDULES = ('cosine', 'linear')


def scheduled_temperature(step: int, total: int, start: float, end: float,
                       schedule: str = 'cosine') -> float:
    """The temperature at ``step`` of ``total``: ``start`` at 0, ``end`` at ``total`` and
    after, between them ``end + (start - end) * (1 + cos(pi * step / total)) / 2`` (cosine) or
    the straight line (linear)."""
    progress = min(max(step / total, 0.0), 1.0) if total > 0 else 1.0
    if schedule == 'cosine':
        return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
    return start + (end - start) * progress


@HOOKS.register_module()
class SoftMiningTemperatureHook(Hook):
    """Set the soft-mining temperature of every ``HardNegativeSampler(mode='soft')`` in the
    model before each training iteration.

    Args:
        start: temperature at the first iteration (>= 0; 0 is hard mining).
        end: temperature the schedule reaches at ``max_iters`` (>= 0); the last iteration,
            ``max_iters - 1``, trains one step short of it (a 2-step run: ``start``, then
            the midpoint).
        schedule: 'cosine' (slow at both ends) or 'linear'.

    The temperature reached is logged as ``temperature`` with the losses.
    """

    priority = 'NORMAL'

    def __init__(self, start: float, end: float, schedule: str = 'cosine') -> None:
        for name, value in (('start', start), ('end', end)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f'SoftMiningTemperatureHook: {name}={value!r}; allowed: a '
                                 f'finite number >= 0 (0: hard mining)')
        if schedule not in SCHEDULES:
            raise ValueError(f'SoftMiningTemperatureHook: schedule={schedule!r}; allowed: '
                             f'{SCHEDULES}')
        self.start, self.end, self.schedule = float(start), float(end), schedule
        self._samplers: list[HardNegativeSampler] = []  # set in before_train

    @staticmethod
    def _soft_samplers(model: Any) -> list[HardNegativeSampler]:
        model = model.module if is_model_wrapper(model) else model
        samplers = [m.sampler for m in model.modules()
                    if isinstance(getattr(m, 'sampler', None), HardNegativeSampler)]
        return [s for s in samplers if s.mode == 'soft']

    def before_train(self, runner: Any) -> None:
        # Found once: the model's samplers do not change during training.
        self._samplers = self._soft_samplers(runner.model)
        if not self._samplers:
            raise ValueError("SoftMiningTemperatureHook: the model has no "
                             "HardNegativeSampler with mode='soft'; set "
                             "model.train_cfg.sampler=dict(type='HardNegativeSampler', "
                             "mode='soft', ...) or remove the hook")

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        temperature = scheduled_temperature(runner.iter, runner.max_iters, self.start, self.end,
                                         self.schedule)
        for sampler in self._samplers:
            sampler.temperature = temperature
        runner.message_hub.update_scalar('train/temperature', temperature)
