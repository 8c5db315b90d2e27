"""Short quick-start trainings through ``tools/train.py`` in subprocesses, for the tests that
need whole runs (several processes, crash and resume, determinism), and the hook that
SIGKILLs such a run: the subprocess imports this module through ``custom_imports``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / 'configs' / 'quickstart' / 'retinanet_r18_quickstart.py'

# The quick-start model with EFL, whose per-class statistics are training state too.
# AnchorHead reads use_sigmoid from the loss config, so it is spelled out.
EFL_CONFIG = f"""
_base_ = {str(QUICKSTART)!r}
model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='EqualizedFocalLoss', num_classes=6, use_sigmoid=True)))
"""

# The hard-negative sampler on the quick-start model (its head hands the sampler scores).
MINING_OPTIONS = ['model.bbox_head.type=MiningRetinaHead',
                  'model.train_cfg.sampler.type=HardNegativeSampler']


def generate_data(out: Path) -> Path:
    """The tiny generated data set: 16 train and 8 val images."""
    subprocess.run([sys.executable, 'tools/generate_data.py', '--out', str(out),
                    '--num-train', '16', '--num-val', '8'], cwd=ROOT, check=True,
                   capture_output=True)
    return out


def short_run_options(data: Path, max_iters: int, checkpoint_interval: int = -1) -> list[str]:
    """--cfg-options for ``max_iters`` steps of batch 2 on ``data``: a loss logged every step,
    unsmoothed, no validation, a checkpoint every ``checkpoint_interval`` steps and at the end.
    """
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ann = f'{data}/annotations/instances_val.json'
    return ['--cfg-options', f'train_cfg.max_iters={max_iters}',
            f'train_cfg.val_interval={max_iters + 1}',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            f'default_hooks.checkpoint.interval={checkpoint_interval}',
            'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False',
            *[f'{loader}.dataset.data_root={data}/' for loader in loaders],
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']


def train(args: list[str], processes: int = 1, timeout: float = 600
          ) -> subprocess.CompletedProcess:
    """``tools/train.py ARGS`` (under torchrun with ``--launcher pytorch`` for several
    processes), eager kernels, one thread per process; this module importable by the run."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PLUGIN_COMPILE='0',
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / 'tests')]))
    if processes == 1:
        cmd = [sys.executable, 'tools/train.py', *args]
    else:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               f'--nproc_per_node={processes}', 'tools/train.py', *args,
               '--launcher', 'pytorch']
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check(run: subprocess.CompletedProcess) -> str:
    """The run's output; fails the test with its tail when the run failed."""
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    return log


def logged_steps(work_dir: Path) -> dict[int, dict[str, float]]:
    """Every logged training step of every run in work_dir (a resumed run's steps replace
    those its crashed predecessor logged): iteration -> {'loss': ..., 'lr': ...}."""
    steps: dict[int, dict[str, float]] = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                steps[record['iter']] = record
    return steps


@HOOKS.register_module()
class SigkillAfterIter(Hook):
    """SIGKILLs its own process after training step ``iteration`` (1-based), once every other
    hook, checkpointing included, is done with that step: a crash at a known point."""

    priority = 'LOWEST'

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)
