"""One run of a suite, in its own process: train (resuming from the run's last checkpoint
when there is one), evaluate the final model, write the run's ``results.json``.

    python -m plugin.repro.worker RUN_DIR [--launcher none|pytorch|slurm]

``RUN_DIR`` holds ``config.py`` and ``run.json`` (written by :mod:`plugin.repro.runner`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from .records import (METRIC_KEYS, RESULT_FILE, RUN_FILE, config_sha256, environment,
                      schedule_name, write_json)

__all__ = ['run_one']


def _record(run: dict[str, Any], metrics: dict[str, float], wall_time_s: float,
            resumed_from_iter: int | None, steps: int) -> dict[str, Any]:
    per_class = {k[len('coco/'):-len('_precision')]: v for k, v in metrics.items()
                 if k.startswith('coco/') and k.endswith('_precision')}
    if not metrics:  # mmdet's CocoMetric returns nothing when there is no detection at all
        metrics = dict.fromkeys(METRIC_KEYS.values(), 0.0)
    return {**run, 'steps': steps, 'wall_time_s': round(wall_time_s, 1),
            'resumed_from_iter': resumed_from_iter,
            **{name: metrics[key] for name, key in METRIC_KEYS.items()},
            'per_class_ap': per_class}


def run_one(run_dir: str | Path, launcher: str = 'none') -> dict[str, Any]:
    """Train and evaluate the run in ``run_dir``; returns (and on rank 0 writes) its record."""
    from mmengine.config import Config
    from mmengine.dist import get_rank, get_world_size
    from mmengine.runner import Runner

    import plugin  # noqa: F401  (registrations, checkpoint loading)
    from plugin.compat import allow_cpu_launch, allow_mmengine_checkpoints

    allow_mmengine_checkpoints()
    allow_cpu_launch()  # --launcher pytorch without CUDA: gloo, as tools/train.py
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run = json.loads((run_dir / RUN_FILE).read_text())
    # Built from a dict, the config has no file name, so mmengine dumps it as TIMESTAMP.py
    # instead of over the run's config.py (which would lose the settings changed below).
    cfg = Config(Config.fromfile(run_dir / 'config.py').to_dict())
    cfg.work_dir = str(run_dir)
    cfg.launcher = launcher
    last = run_dir / 'last_checkpoint'
    resumed_from_iter = None
    if last.is_file():  # interrupted: mmengine resumes from the checkpoint named there
        cfg.resume, cfg.load_from = True, None
        name = Path(last.read_text().strip()).stem  # iter_N or epoch_N
        resumed_from_iter = int(name.split('_')[-1]) if name.split('_')[-1].isdigit() else None
    # The final model is evaluated once, after training (runner.test on the val split):
    # no evaluation inside the loop, which a resume past its step would skip.
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    record = _record(run, metrics, time.perf_counter() - start, resumed_from_iter,
                     steps=runner.iter)
    # What a rerun needs besides the command (run.json): the config's hash (the file is
    # beside the record), the length, the processes, the versions and the thread count.
    record.update(config_sha256=config_sha256(run_dir / 'config.py'),
                  schedule=run.get('schedule') or schedule_name(cfg.train_cfg),
                  processes=get_world_size(), **environment())
    if get_rank() == 0:
        write_json(run_dir / RESULT_FILE, record)
    return record


def main() -> None:
    """Command line (what the suite runner starts)."""
    from plugin.compat import exit_after

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('run_dir')
    parser.add_argument('--launcher', choices=('none', 'pytorch', 'slurm'), default='none')
    # torch.distributed.launch passes --local-rank on torch >= 2.0.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))

    def train_and_evaluate() -> int:
        run_one(args.run_dir, args.launcher)
        return 0

    # several processes: ends without finalization, and every way out has a deadline
    exit_after(train_and_evaluate)


if __name__ == '__main__':
    main()
