"""Command lines behind ``tools/train.py`` and ``tools/test.py``.

They take the same flags as MMDetection 3.3's own ``tools/train.py`` / ``tools/test.py`` and
build the same mmengine ``Runner``; the differences are that the plugin is imported (its
registrations and the checkpoint-loading fix apply) and that a mistake on the command line
ends in a one-line error rather than a traceback.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.runner import Runner

from plugin.compat import allow_mmengine_checkpoints
from plugin.data.datasets import MissingDataError

__all__ = ['run_test', 'run_train']

_LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--work-dir',
        help='folder for logs, checkpoints and metrics '
        '(default: work_dir in the config, else ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. train_cfg.max_iters=10 '
        'optim_wrapper.optimizer.lr=0.01; lists as key="[a,b]" or key=a,b, '
        'nested as key="[(a,b),(c,d)]", no spaces')
    parser.add_argument('--launcher', choices=_LAUNCHERS, default='none',
                        help='job launcher for distributed runs')
    # torch.distributed.launch passes --local-rank on torch >= 2.0, --local_rank before.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/train.py', description='Train a detector (plugin registered).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper, dynamic loss scale)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the learning rate by the batch size (config's auto_scale_lr)")
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help='resume from CKPT, or, without CKPT, from the latest checkpoint in the work dir')
    _add_common_args(parser)
    return parser


def _test_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/test.py', description='Test (and evaluate) a detector (plugin registered).')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (path or URL)')
    parser.add_argument('--out', metavar='FILE.pkl',
                        help='also dump the raw predictions to this pickle file')
    parser.add_argument('--show', action='store_true', help='show each painted prediction')
    parser.add_argument('--show-dir', metavar='DIR',
                        help='save painted predictions under WORK_DIR/TIMESTAMP/DIR')
    parser.add_argument('--wait-time', type=float, default=2.0,
                        help='seconds each image is shown with --show (default: 2)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    _add_common_args(parser)
    return parser


def _require_file(parser: argparse.ArgumentParser, path: str, what: str) -> None:
    # mmengine also loads http(s)://, open-mmlab://, torchvision:// ...; those are its to check.
    if '://' not in path and not Path(path).is_file():
        parser.error(f"{what} '{path}' does not exist")


def _load_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Config:
    """Read the config and apply the options both command lines share."""
    # Set before anything reads it; a distributed launcher may already have.
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = str(Path('work_dirs') / Path(args.config).stem)
    return cfg


def _build_runner(cfg: Config) -> Runner:
    from mmdet.registry import RUNNERS
    from mmdet.utils import setup_cache_size_limit_of_dynamo

    # Detection losses and post-processing have dynamic shapes; keep dynamo from
    # recompiling them endlessly.
    setup_cache_size_limit_of_dynamo()
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _report_missing_data(run: Callable[[], object]) -> int:
    """Run; a missing dataset path ends in its one clear message, not a dataloader traceback."""
    try:
        run()
    except MissingDataError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


def run_train(argv: Sequence[str] | None = None) -> int:
    """``tools/train.py``: train with a config; returns the exit status."""
    allow_mmengine_checkpoints()
    parser = _train_parser()
    args = parser.parse_args(argv)
    _require_file(parser, args.config, 'config file')
    if args.resume not in (None, 'auto'):
        _require_file(parser, args.resume, 'checkpoint to resume from')
    cfg = _load_config(parser, args)

    if args.amp:
        if 'optim_wrapper' not in cfg:
            parser.error('--amp needs an optim_wrapper in the config')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr') or {}
        if 'enable' not in scale or 'base_batch_size' not in scale:
            parser.error('--auto-scale-lr needs auto_scale_lr=dict(enable=..., '
                         'base_batch_size=...) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # mmengine then looks for work_dir/last_checkpoint.
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    return _report_missing_data(_build_runner(cfg).train)


def _enable_visualization(parser: argparse.ArgumentParser, cfg: Config,
                          args: argparse.Namespace) -> None:
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        parser.error('--show/--show-dir need default_hooks.visualization '
                     "(e.g. dict(type='DetVisualizationHook')) in the config")
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        hook.test_out_dir = args.show_dir


def _enable_tta(cfg: Config) -> None:
    """Wrap the model in a TTA model and give the test set a flip-augmented pipeline,
    with MMDetection's defaults where the config has no ``tta_model`` / ``tta_pipeline``.
    """
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers: the pipeline lives innermost
        dataset = dataset.dataset
    if 'tta_model' not in cfg:
        warnings.warn('no tta_model in the config; using DetTTAModel with NMS 0.5',
                      stacklevel=2)
        cfg.tta_model = {
            'type': 'DetTTAModel',
            'tta_cfg': {'nms': {'type': 'nms', 'iou_threshold': 0.5}, 'max_per_img': 100},
        }
    if 'tta_pipeline' not in cfg:
        warnings.warn('no tta_pipeline in the config; using the test pipeline with '
                      'horizontal flip on and off', stacklevel=2)
        pipeline = copy.deepcopy(dataset.pipeline)
        flips = [{'type': 'RandomFlip', 'prob': 1.0}, {'type': 'RandomFlip', 'prob': 0.0}]
        pack = {'type': 'PackDetInputs',
                'meta_keys': ('img_id', 'img_path', 'ori_shape', 'img_shape',
                              'scale_factor', 'flip', 'flip_direction')}
        # The last step packs the inputs; TestTimeAug packs each flipped copy instead.
        pipeline[-1] = {'type': 'TestTimeAug', 'transforms': [flips, [pack]]}
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    dataset.pipeline = cfg.tta_pipeline


def run_test(argv: Sequence[str] | None = None) -> int:
    """``tools/test.py``: test a checkpoint with a config; returns the exit status."""
    allow_mmengine_checkpoints()
    parser = _test_parser()
    args = parser.parse_args(argv)
    _require_file(parser, args.config, 'config file')
    _require_file(parser, args.checkpoint, 'checkpoint')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f"--out must name a .pkl or .pickle file, got '{args.out}'")
    cfg = _load_config(parser, args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _enable_visualization(parser, cfg, args)
    if args.tta:
        _enable_tta(cfg)

    runner = _build_runner(cfg)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults

        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    return _report_missing_data(runner.test)
