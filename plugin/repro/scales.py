"""The three scales of ``tools/reproduce.py``: the config each suite entry becomes.

- ``quick``: the quick-scale RetinaNet (``configs/_base_/quick_scale.py``) on generated data,
  with the entry's method: its head type, classification loss and sampler. SSD heads become
  RetinaNet heads (SSD's softmax cross entropy and mining carry over, its backbone does not).
- ``coco128``: the same model on real COCO images from a folder (80 classes, train = val):
  an end-to-end check, its AP is low.
- ``coco``: the config as it is, on COCO at ``data_root``, launched by mmengine on N GPUs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

from plugin.data.errors import MissingDataError

from .suites import SCALES, SuiteEntry

__all__ = ['QUICK_BASE', 'QUICKSTART', 'ScaleOptions', 'build_run_config', 'check_data',
           'method_of']

QUICK_BASE = 'configs/_base_/quick_scale.py'
QUICKSTART = 'configs/quickstart/retinanet_r18_quickstart.py'

# The quick-scale data: the quick-start generator's train split and a 4x validation split.
QUICK_DATA = dict(num_train=1000, num_val=1000)

# MiningSSDHead's classification loss when the config names none (softmax cross entropy).
_SSD_DEFAULT_LOSS = dict(type='SoftmaxFocalLoss', use_sigmoid=False, gamma=0.0, alpha=None,
                         loss_weight=1.0)
_RETINA_HEAD = {'MiningSSDHead': 'MiningRetinaHead', 'SSDHead': 'RetinaHead'}
# What "the method" of a config is: the fields a quick-scale run takes from it.
METHOD_FIELDS = ('model.bbox_head.type', 'model.bbox_head.loss_cls', 'model.train_cfg.sampler')
_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
_EVALUATORS = ('val_evaluator', 'test_evaluator')


@dataclass(frozen=True)
class ScaleOptions:
    """How a suite runs.

    Args:
        scale: one of ``SCALES``.
        data_root: the data folder (quick: generated there when absent).
        max_iters: a shorter quick/coco128 schedule of the same shape (tests, smoke runs);
            None keeps the scale's own.
        repo_root: where the configs are.
    """

    scale: str
    data_root: str
    max_iters: int | None = None
    repo_root: str = '.'

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale '{self.scale}' is not known; allowed: {', '.join(SCALES)}")
        if self.max_iters is not None and (self.scale == 'coco' or self.max_iters < 2):
            raise ValueError(f'max_iters={self.max_iters}: allowed only at the quick and '
                             f'coco128 scales, and >= 2')


def check_data(options: ScaleOptions) -> None:
    """Raise :class:`MissingDataError` (one line: the path and what belongs there) unless
    the scale's data is in place. The quick scale's data is generated when absent."""
    root = Path(options.data_root)
    if options.scale == 'quick':
        if not (root / 'annotations' / 'instances_val.json').is_file():
            from plugin.data.synthetic import generate

            print(f'reproduce: generating the quick-scale data in {root} (a few seconds)')
            generate(root, **QUICK_DATA)
        return
    needed = {'coco128': ['annotations/instances_train2017.json', 'train2017'],
              'coco': ['annotations/instances_train2017.json', 'train2017',
                       'annotations/instances_val2017.json', 'val2017']}[options.scale]
    if not root.is_dir():
        raise MissingDataError(f"data folder '{root}' does not exist (--scale {options.scale} "
                               f"reads {', '.join(needed)} under --data-root)")
    missing = [p for p in needed if not (root / p).exists()]
    if missing:
        raise MissingDataError(f"data folder '{root}' lacks {', '.join(missing)} (--scale "
                               f"{options.scale} reads {', '.join(needed)} under --data-root)")


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for key in dotted.split('.'):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def method_of(entry_cfg: Config) -> dict[str, Any]:
    """The method of a config as ``{dotted field: value}`` over ``METHOD_FIELDS``."""
    tree = entry_cfg.to_dict()
    head_type = _get(tree, 'model.bbox_head.type')
    loss = _get(tree, 'model.bbox_head.loss_cls')
    if loss is None and head_type == 'MiningSSDHead':
        loss = _SSD_DEFAULT_LOSS
    sampler = _get(tree, 'model.train_cfg.sampler')
    if head_type is None or loss is None or sampler is None:
        raise ValueError(f'{entry_cfg.filename}: a suite config needs model.bbox_head.type, '
                         f'model.bbox_head.loss_cls and model.train_cfg.sampler')
    return {'model.bbox_head.type': _RETINA_HEAD.get(head_type, head_type),
            'model.bbox_head.loss_cls': copy.deepcopy(loss),
            'model.train_cfg.sampler': copy.deepcopy(sampler)}


def _flatten(node: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f'{prefix}{key}.'))
        return out
    return {prefix[:-1]: node}


def uncarried_fields(entry_cfg: Config, quickstart_cfg: Config) -> list[str]:
    """Fields where a config written over the quick start differs from it outside its
    method: what the quick scale does not carry over (reported, so nothing is lost quietly)."""
    mine, base = _flatten(entry_cfg.to_dict()), _flatten(quickstart_cfg.to_dict())
    return sorted(k for k in set(mine) | set(base)
                  if mine.get(k) != base.get(k) and k != 'filename'
                  and not any(k == f or k.startswith(f + '.') for f in METHOD_FIELDS))


def _set(cfg: Config, dotted: str, value: Any) -> None:
    *path, last = dotted.split('.')
    node = cfg
    for key in path:
        node = node[key]
    node[last] = ConfigDict(value) if isinstance(value, dict) else value


def _point_at_data(cfg: Config, root: str, splits: dict[str, tuple[str, str]]) -> None:
    """Set data_root, ann_file and image folder of every loader and evaluator;
    ``splits`` maps 'train' / 'val' to (annotation file, image folder) under ``root``."""
    root = root.rstrip('/') + '/'
    for loader in _LOADERS:
        dataset = cfg[loader].dataset
        ann_file, img = splits['train' if loader == 'train_dataloader' else 'val']
        dataset.data_root, dataset.ann_file, dataset.data_prefix = root, ann_file, dict(img=img)
    for evaluator in _EVALUATORS:
        cfg[evaluator].ann_file = root + splits['val'][0]


def _shorten(cfg: Config, max_iters: int) -> None:
    """The quick schedule's shape (warm-up, cosine, checkpoints) over ``max_iters`` steps."""
    ratio = max_iters / cfg.train_cfg.max_iters
    for scheduler in cfg.param_scheduler:
        scheduler.begin = round(scheduler.begin * ratio)
        scheduler.end = max(round(scheduler.end * ratio), scheduler.begin + 1)
    checkpoint = cfg.default_hooks.checkpoint
    checkpoint.interval = max(1, round(checkpoint.interval * ratio))
    cfg.default_hooks.logger.interval = max(1, min(cfg.default_hooks.logger.interval,
                                                   max_iters // 4))
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = max_iters


def build_run_config(entry: SuiteEntry, options: ScaleOptions, seed: int) -> Config:
    """The config one run trains: ``entry`` at ``options.scale`` with ``seed``."""
    repo = Path(options.repo_root)
    if options.scale not in entry.scales:
        raise ValueError(f"{entry.name} does not run at the {options.scale} scale (its "
                         f"scales: {', '.join(entry.scales)})")
    entry_cfg = Config.fromfile(repo / entry.config)
    if options.scale == 'coco':
        cfg = entry_cfg
        old_root = cfg.get('data_root', '')
        cfg.data_root = options.data_root  # the config's own variable, for whoever reads it
        for loader in _LOADERS:
            cfg[loader].dataset.data_root = options.data_root
        for evaluator in _EVALUATORS:
            ann = cfg[evaluator].ann_file
            cfg[evaluator].ann_file = str(Path(options.data_root) / ann[len(old_root):]) \
                if old_root and ann.startswith(old_root) else ann
        # Bitwise determinism would fail on CUDA ops without a deterministic kernel.
        cfg.randomness = dict(seed=seed, deterministic=False)
        return cfg

    cfg = Config.fromfile(repo / QUICK_BASE)
    for field, value in method_of(entry_cfg).items():
        _set(cfg, field, value)
    if options.scale == 'quick':
        _point_at_data(cfg, options.data_root, {'train': ('annotations/instances_train.json',
                                                          'train/'),
                                                'val': ('annotations/instances_val.json',
                                                        'val/')})
    else:  # coco128: 128 real images, trained and evaluated on the same ones
        split = ('annotations/instances_train2017.json', 'train2017/')
        _point_at_data(cfg, options.data_root, {'train': split, 'val': split})
        for loader in _LOADERS:
            cfg[loader].dataset.metainfo = None  # CocoDataset's 80 classes
        cfg.model.bbox_head.num_classes = 80
        for evaluator in _EVALUATORS:
            cfg[evaluator].classwise = True
    if options.max_iters is not None:
        _shorten(cfg, options.max_iters)
    cfg.randomness = dict(seed=seed, deterministic=True)
    return cfg


def describe(cfg: Config) -> str:
    """A stable text of a run's config: equal texts, equal runs."""
    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)
