"""Run records: what one run wrote (``results.json`` in its folder) and their summaries."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ['METRIC_KEYS', 'RESULT_FILE', 'RUN_FILE', 'Summary', 'load_records', 'summarize',
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


def load_records(runs_dir: Path) -> list[dict[str, Any]]:
    """Every finished run's record under ``runs_dir`` (``NAME/seedS/results.json``)."""
    return [json.loads(p.read_text()) for p in sorted(runs_dir.glob(f'*/seed*/{RESULT_FILE}'))]


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
