"""Run records: what one run wrote (``results.json`` in its folder), what a stranger needs
to run it again (the code, the command, the schedule, the config's hash, the versions and the
thread count), and the records' summaries."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .suites import SCALES

__all__ = ['METRIC_KEYS', 'RESULT_FILE', 'RUN_FILE', 'Summary', 'config_sha256', 'environment',
           'load_records', 'portable_path', 'repo_commit', 'schedule_name', 'summarize',
           'write_json']

RESULT_FILE = 'results.json'
RUN_FILE = 'run.json'
# Record field -> mmdet CocoMetric key (AP over IoU .5:.95, at .5, at .75, small/medium/large).
METRIC_KEYS = {'AP': 'coco/bbox_mAP', 'AP50': 'coco/bbox_mAP_50', 'AP75': 'coco/bbox_mAP_75',
               'APs': 'coco/bbox_mAP_s', 'APm': 'coco/bbox_mAP_m', 'APl': 'coco/bbox_mAP_l'}


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically: a reader never sees half a record."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, path)


def schedule_name(train_cfg: Mapping[str, Any]) -> str:
    """A run's length, part of its identity: '600it' for an iteration-based loop of 600 steps,
    '12ep' for an epoch-based one of 12 epochs."""
    if train_cfg.get('max_iters') is not None:
        return f"{train_cfg['max_iters']}it"
    if train_cfg.get('max_epochs') is not None:
        return f"{train_cfg['max_epochs']}ep"
    raise ValueError(f'train_cfg names neither max_iters nor max_epochs: {dict(train_cfg)}')


def load_records(runs_dir: Path) -> list[dict[str, Any]]:
    """Every finished run's record under ``runs_dir`` (``NAME/LENGTH/seedS/results.json``, and
    ``NAME/seedS/results.json`` as written before the length was part of a run's folder). A
    record without its ``schedule`` (an older one) takes it from the config its folder kept."""
    paths = [*runs_dir.glob(f'*/*/seed*/{RESULT_FILE}'), *runs_dir.glob(f'*/seed*/{RESULT_FILE}')]
    records = []
    for path in sorted(paths):
        record = json.loads(path.read_text())
        spec = path.parent / 'spec.json'
        if 'schedule' not in record and spec.is_file():
            cfg = json.loads(json.loads(spec.read_text())['config'])
            record['schedule'] = schedule_name(cfg.get('train_cfg', {}))
        records.append(record)
    return records


def repo_commit(repo_root: Path) -> str:
    """HEAD's short hash, with '+dirty' when tracked files differ from it ('unknown' outside
    a git checkout)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(['git', *args], cwd=repo_root, capture_output=True, text=True)

    head = git('rev-parse', '--short', 'HEAD')
    if head.returncode != 0:
        return 'unknown'
    dirty = git('diff', '--quiet', 'HEAD', '--').returncode != 0
    return head.stdout.strip() + ('+dirty' if dirty else '')


def config_sha256(path: Path) -> str:
    """The SHA-256 of a run's resolved config file (``config.py`` beside its record)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def environment() -> dict[str, Any]:
    """What the numbers of a run depend on besides the code and the config: the versions of
    Python, torch, mmcv, mmdet and mmengine, and the threads torch computes with."""
    import mmcv
    import mmdet
    import mmengine
    import torch

    return {'versions': {'python': sys.version.split()[0], 'torch': torch.__version__,
                         'mmcv': mmcv.__version__, 'mmdet': mmdet.__version__,
                         'mmengine': mmengine.__version__},
            'threads': {'torch': torch.get_num_threads(),
                        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS')}}


def portable_path(path: str | Path, repo_root: str | Path) -> str:
    """A path as it reads on another machine: relative to the repository when inside it; a
    file of a ``tools/reproduce.py`` run folder from its output folder on
    (``OUT/SCALE/runs/NAME/...``); any other as given, the home folder written ``~``."""
    resolved = Path(path).expanduser().resolve()
    try:
        return str(resolved.relative_to(Path(repo_root).resolve()))
    except ValueError:
        pass
    parts = resolved.parts
    for i in range(1, len(parts) - 1):
        if parts[i] == 'runs' and parts[i - 1] in SCALES:
            return str(Path('OUT', *parts[i - 1:]))
    home = Path.home()
    return str(Path('~', resolved.relative_to(home))) if resolved.is_relative_to(home) \
        else str(path)


@dataclass(frozen=True)
class Summary:
    """One config over its seeds: the mean and the sample standard deviation of each metric
    (the spread; NaN with one seed)."""

    name: str
    seeds: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(records: list[dict[str, Any]], name: str) -> Summary | None:
    """The summary of the records of config ``name``; None when it has none."""
    mine = sorted((r for r in records if r['name'] == name), key=lambda r: r['seed'])
    if not mine:
        return None
    mean, std = {}, {}
    for metric in METRIC_KEYS:
        mean[metric], std[metric] = _mean_std([float(r[metric]) for r in mine])
    return Summary(name=name, seeds=tuple(r['seed'] for r in mine), mean=mean, std=std)
