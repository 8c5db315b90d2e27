"""The scales of ``tools/reproduce.py``: the config each suite entry becomes.

- ``quick``: the quick-scale RetinaNet (``configs/_base_/quick_scale.py``) on generated data,
  with the entry's method: its head type, classification loss and sampler. SSD heads become
  RetinaNet heads (SSD's softmax cross entropy and mining carry over, its backbone does not).
- ``coco128``: the same model on real COCO images from a folder (80 classes, train = val):
  an end-to-end check, its AP is low.
- ``coco``: the config as it is, on COCO at ``data_root``, launched by mmengine on N GPUs.
- ``coco-short``: the same with :data:`COCO_SHORT_FRACTION` of the config's schedule, its steps
  and learning-rate milestones scaled together, each update over the config's batch (gradient
  accumulation where fewer GPUs hold it): the paper's orderings on one GPU in about a day.

At the coco scales ``max_iters`` makes a smoke run: that many steps of the same schedule's
shape, evaluated on the first :data:`SMOKE_EVAL_IMAGES` images (on ``train2017`` when the
folder has no ``val2017``, as ``coco128`` has not).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

from plugin.data.errors import MissingDataError

from .suites import COCO_SCALES, SCALES, SuiteEntry

__all__ = ['QUICK_BASE', 'QUICKSTART', 'ScaleOptions', 'build_run_config', 'clear_init_cfg',
           'check_data', 'method_of', 'quickstart_changes']

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

# COCO train2017 images with at least one box (what mmdet's filter_empty_gt keeps): the epoch
# length that turns a config's epochs into steps at the coco scales.
COCO_TRAIN_IMAGES = 117_266
# coco-short: this fraction of each config's own schedule (the 1x's 12 epochs -> 1.5). Seven
# R50-FPN 600 px configs then take about 15 hours on one A100-class GPU: an estimate from
# mmdet's published iteration times, see docs/benchmarks.md "GPU-hours per scale".
COCO_SHORT_FRACTION = 1 / 8
# A smoke run at a coco scale evaluates on this many images (its AP means nothing anyway).
SMOKE_EVAL_IMAGES = 4
_COCO_TRAIN = ('annotations/instances_train2017.json', 'train2017/')
_COCO_VAL = ('annotations/instances_val2017.json', 'val2017/')


@dataclass(frozen=True)
class ScaleOptions:
    """How a suite runs.

    Args:
        scale: one of ``SCALES``.
        data_root: the data folder (quick: generated there when absent).
        max_iters: a shorter schedule of the same shape (tests, smoke runs); None keeps the
            scale's own.
        repo_root: where the configs are.
        gpus: processes per run. coco-short accumulates the gradient of
            ``auto_scale_lr.base_batch_size / (gpus x batch)`` steps into each update, so
            every update sees the config's batch however many GPUs hold it.
        pretrained: False builds the coco-scale models with ``init_cfg=None`` (random
            backbone): smoke runs on machines without the ImageNet weights.
    """

    scale: str
    data_root: str
    max_iters: int | None = None
    repo_root: str = '.'
    gpus: int = 1
    pretrained: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale '{self.scale}' is not known; allowed: {', '.join(SCALES)}")
        if self.max_iters is not None and self.max_iters < 2:
            raise ValueError(f'max_iters={self.max_iters}; allowed: an int >= 2')
        if self.gpus < 1:
            raise ValueError(f'gpus={self.gpus}; allowed: an int >= 1')


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
    needed = [p.rstrip('/') for p in _COCO_TRAIN]
    if options.scale in COCO_SCALES:
        if options.max_iters is None or _has_val(root):
            needed += [p.rstrip('/') for p in _COCO_VAL]
        else:
            print(f'reproduce: note: {root} has no val2017: this smoke run (--iters) evaluates '
                  f'on train2017')
    if not root.is_dir():
        raise MissingDataError(f"data folder '{root}' does not exist (--scale {options.scale} "
                               f"reads {', '.join(needed)} under --data-root)")
    missing = [p for p in needed if not (root / p).exists()]
    if missing:
        raise MissingDataError(f"data folder '{root}' lacks {', '.join(missing)} (--scale "
                               f"{options.scale} reads {', '.join(needed)} under --data-root)")


def _has_val(root: Path) -> bool:
    return all((root / p).exists() for p in _COCO_VAL)


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


def quickstart_changes(entry_cfg: Config, quickstart_cfg: Config) -> dict[str, Any]:
    """What a config written over the quick start changes in it, as ``{dotted field: value}``:
    the quick and coco128 scales carry all of it (its method, and e.g. PISA's train_cfg or a
    temperature schedule's hook). A dict that drops a key of the quick start's is carried
    whole; in the others, only the fields that changed."""
    def changes(mine: dict, base: Any, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in mine.items():
            old = base.get(key) if isinstance(base, dict) else None
            if value == old or key == 'filename':
                continue
            if isinstance(value, dict) and isinstance(old, dict) and set(old) <= set(value):
                out.update(changes(value, old, f'{prefix}{key}.'))
            else:
                out[prefix + key] = copy.deepcopy(value)
        return out

    return changes(entry_cfg.to_dict(), quickstart_cfg.to_dict(), '')


def _set(cfg: Config, dotted: str, value: Any) -> None:
    *path, last = dotted.split('.')
    node = cfg
    for key in path:
        node = node.setdefault(key, ConfigDict())
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
        if 'milestones' in scheduler:
            scheduler.milestones = [round(m * ratio) for m in scheduler.milestones]
    checkpoint = cfg.default_hooks.checkpoint
    checkpoint.interval = max(1, round(checkpoint.interval * ratio))
    cfg.default_hooks.logger.interval = max(1, min(cfg.default_hooks.logger.interval,
                                                   max_iters // 4))
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = max_iters


def _dataset(loader: ConfigDict) -> ConfigDict:
    """The loader's dataset itself, inside any wrapper (SSD's RepeatDataset)."""
    dataset = loader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset


def _point_at_root(cfg: Config, root: str) -> None:
    """Replace the config's data root by ``root`` in its datasets and evaluators."""
    old_root = cfg.get('data_root', '')
    cfg.data_root = root  # the config's own variable, for whoever reads it
    for loader in _LOADERS:
        _dataset(cfg[loader]).data_root = root
    for evaluator in _EVALUATORS:
        ann = cfg[evaluator].ann_file
        cfg[evaluator].ann_file = str(Path(root) / ann[len(old_root):]) \
            if old_root and ann.startswith(old_root) else ann


def _to_steps(cfg: Config, fraction: float, gpus: int, accumulate: bool) -> None:
    """Make the config's epoch-based schedule step-based, over ``fraction`` of its epochs of
    COCO train2017 (a RepeatDataset's repeats counted): epoch-based schedulers (the LR
    milestones) scale with it, step-based ones (the warm-up) keep their number of updates.
    With ``accumulate``, ``base_batch_size / (gpus x batch)`` steps make one update."""
    loader, train = cfg.train_dataloader, cfg.train_cfg
    if train.get('type') != 'EpochBasedTrainLoop':
        raise ValueError(f"{cfg.filename}: train_cfg.type is {train.get('type')}; the coco "
                         f'scales shorten only an EpochBasedTrainLoop')
    images_per_step = loader.batch_size * gpus
    steps_per_update = 1
    if accumulate:
        base = cfg.auto_scale_lr.base_batch_size
        if base % images_per_step:
            raise ValueError(f'gpus={gpus}: gpus x train_dataloader.batch_size ({images_per_step})'
                             f' must divide the config\'s batch ({base}); allowed: a divisor of '
                             f'{base // loader.batch_size}')
        steps_per_update = base // images_per_step
        cfg.optim_wrapper.accumulative_counts = steps_per_update
    repeats = loader.dataset.get('times', 1) if loader.dataset.type == 'RepeatDataset' else 1
    steps_per_epoch = fraction * COCO_TRAIN_IMAGES * repeats / images_per_step
    max_iters = round(train.max_epochs * steps_per_epoch)
    for scheduler in cfg.param_scheduler:
        steps = steps_per_epoch if scheduler.get('by_epoch', True) else steps_per_update
        scheduler.begin = round(scheduler.get('begin', 0) * steps)
        scheduler.end = min(round(scheduler.get('end', train.max_epochs) * steps), max_iters)
        if 'milestones' in scheduler:
            scheduler.milestones = [round(m * steps) for m in scheduler.milestones]
        scheduler.by_epoch = False
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=max_iters,
                               val_interval=max_iters)
    cfg.log_processor = ConfigDict(cfg.get('log_processor', {}), by_epoch=False)
    # A checkpoint each twelfth of the run: a resumed run repeats at most that much.
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=max(1, max_iters // 12))


def clear_init_cfg(node: Any) -> None:
    """Every ``init_cfg`` under ``node`` becomes None (no pretrained weights are read)."""
    if isinstance(node, dict):
        if 'init_cfg' in node:
            node['init_cfg'] = None
        for value in node.values():
            clear_init_cfg(value)
    elif isinstance(node, list):
        for value in node:
            clear_init_cfg(value)


def _coco_config(entry_cfg: Config, options: ScaleOptions, seed: int) -> Config:
    """The config as it is at ``data_root`` (coco), or over its short schedule (coco-short);
    with ``max_iters``, a smoke run of it (see the module's docstring)."""
    cfg = entry_cfg
    _point_at_root(cfg, options.data_root)
    if not options.pretrained:
        clear_init_cfg(cfg.model)
    if options.scale == 'coco-short':
        _to_steps(cfg, COCO_SHORT_FRACTION, options.gpus, accumulate=True)
    if options.max_iters is not None:
        if cfg.train_cfg.type == 'EpochBasedTrainLoop':
            _to_steps(cfg, 1.0, options.gpus, accumulate=False)
        _shorten(cfg, options.max_iters)
        root = options.data_root.rstrip('/') + '/'
        for loader in ('val_dataloader', 'test_dataloader'):
            dataset = _dataset(cfg[loader])
            dataset.indices = SMOKE_EVAL_IMAGES
            if not _has_val(Path(root)):
                dataset.ann_file, dataset.data_prefix = _COCO_TRAIN[0], dict(img=_COCO_TRAIN[1])
        if not _has_val(Path(root)):
            for evaluator in _EVALUATORS:
                cfg[evaluator].ann_file = root + _COCO_TRAIN[0]
    # Bitwise determinism would fail on CUDA ops without a deterministic kernel.
    cfg.randomness = dict(seed=seed, deterministic=False)
    return cfg


def build_run_config(entry: SuiteEntry, options: ScaleOptions, seed: int) -> Config:
    """The config one run trains: ``entry`` at ``options.scale`` with ``seed``."""
    repo = Path(options.repo_root)
    if options.scale not in entry.scales:
        raise ValueError(f"{entry.name} does not run at the {options.scale} scale (its "
                         f"scales: {', '.join(entry.scales)})")
    entry_cfg = Config.fromfile(repo / entry.config)
    if options.scale in COCO_SCALES:
        return _coco_config(entry_cfg, options, seed)

    cfg = Config.fromfile(repo / QUICK_BASE)
    written_over_quickstart = not set(COCO_SCALES) & set(entry.scales)
    carried = quickstart_changes(entry_cfg, Config.fromfile(repo / QUICKSTART)) \
        if written_over_quickstart else method_of(entry_cfg)
    for field, value in carried.items():
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
