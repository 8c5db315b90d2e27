"""Command line of ``tools/reproduce.py``: a mistake ends in one line, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .runner import LAUNCHERS, Launch, RunFailedError, run_suite
from .scales import MissingDataError, ScaleOptions
from .suites import SCALES, SUITES, get_suite

__all__ = ['main']

ROOT = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='tools/reproduce.py',
        description="Run one of the focal-loss paper's comparisons (a suite of configs) over "
                    'seeds, at a scale this machine or a GPU cluster runs; tables and a '
                    'figure in OUT/SCALE/SUITE.')
    parser.add_argument('suite', help=f"one of: {', '.join(SUITES)}")
    parser.add_argument('--scale', choices=SCALES, default='quick',
                        help='quick: generated data, minutes per run on a CPU; coco128: the '
                        'quick model on real images in --data-root; coco: the configs as they '
                        'are on COCO in --data-root')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', default='work_dirs/repro', help='output folder')
    parser.add_argument('--data-root', help='data folder (quick: default data/quick_scale, '
                        'generated when absent; coco128 / coco: required, COCO layout)')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help='run only these configs of the suite (file names without .py)')
    parser.add_argument('--iters', type=int,
                        help='quick / coco128: a shorter schedule of the same shape')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='coco: how each run starts on the GPUs')
    parser.add_argument('--gpus', type=int, default=1, help='GPUs per run (with --launcher)')
    parser.add_argument('--partition', help='slurm partition (--launcher slurm)')
    parser.add_argument('--port', type=int, default=29500,
                        help='torch.distributed master port (--launcher pytorch)')
    parser.add_argument('--dry-run', action='store_true',
                        help='write the run folders and print the commands only')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; rewrite the tables and figure from the records')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; returns the exit status (2: bad input, 1: a run failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        suite = get_suite(args.suite)
        if args.data_root is None and args.scale != 'quick':
            raise ValueError(f'--scale {args.scale} needs --data-root DIR (COCO layout: '
                             f'annotations/instances_train2017.json, train2017/ ...)')
        data_root = Path(args.data_root or ROOT / 'data' / 'quick_scale').resolve()
        options = ScaleOptions(scale=args.scale, data_root=str(data_root),
                               max_iters=args.iters, repo_root=str(ROOT))
        launch = Launch(launcher=args.launcher, gpus=args.gpus, partition=args.partition,
                        port=args.port)
        run_suite(suite, options, args.seeds, Path(args.out).resolve(), launch=launch,
                  only=args.only, dry_run=args.dry_run, report_only=args.report_only)
    except (ValueError, MissingDataError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except RunFailedError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


def _analysis_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        prog='tools/analyze_imbalance.py',
        description='Positives and negatives per image, the share of the classification loss '
                    'and of its gradient from easy negatives (focal loss at several gamma, '
                    "CE), and the focal-loss paper's Figure 4, for a model on a data split.")
    parser.add_argument('config', help='config file (e.g. a run folder\'s config.py)')
    parser.add_argument('checkpoint', help="checkpoint file, or 'none' for the initialized "
                        'model (its scores all near the prior)')
    parser.add_argument('--split', choices=('train', 'val'), default='val')
    parser.add_argument('--max-images', type=int, default=200)
    parser.add_argument('--gammas', type=float, nargs='+', default=[0.0, 0.5, 1.0, 2.0, 5.0])
    parser.add_argument('--alpha', type=float,
                        help='weight positives by alpha, negatives by 1 - alpha (default: none)')
    parser.add_argument('--max-negatives-per-image', type=int, default=20000,
                        help='negative examples kept per image (a uniform sample beyond)')
    parser.add_argument('--out', default='work_dirs/imbalance',
                        help='folder for imbalance.json and figure4.png')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, as in tools/train.py')
    return parser


def analyze_main(argv: Sequence[str] | None = None) -> int:
    """``tools/analyze_imbalance.py``; returns the exit status."""
    import json

    from mmengine.config import Config

    from .imbalance import collect, imbalance_stats, plot_figure4

    parser = _analysis_parser()
    args = parser.parse_args(argv)
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    for path, what in ((args.config, 'config file'), (checkpoint, 'checkpoint')):
        if path is not None and not Path(path).is_file():
            parser.error(f"{what} '{path}' does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        sample = collect(cfg, checkpoint, args.split, args.max_images,
                         args.max_negatives_per_image)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    stats = imbalance_stats(sample, args.gammas, args.alpha)
    stats.update(config=args.config, checkpoint=args.checkpoint, split=args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'imbalance.json').write_text(json.dumps(stats, indent=1) + '\n')
    plot_figure4(sample, str(out / 'figure4.png'),
                 title=f'{Path(args.config).name}, {args.split}, {stats["images"]} images')
    print(f"{stats['images']} images: {stats['positive_anchors_per_image']:.1f} positive and "
          f"{stats['negative_anchors_per_image']:.0f} negative anchors per image, "
          f"{stats['negatives_per_positive']:.0f} negatives per positive; "
          f"{100 * (1 - stats['easy_negative_example_share']):.4f}% of negative examples "
          f'are hard (p_t <= 0.5)')
    print('gamma | loss: negatives, easy negatives | gradient: negatives, easy negatives')
    for gamma, s in stats['per_gamma'].items():
        print(f"{float(gamma):5g} | {s['loss_share_negatives']:.3f}, "
              f"{s['loss_share_easy_negatives']:.3f} | {s['gradient_share_negatives']:.3f}, "
              f"{s['gradient_share_easy_negatives']:.3f}")
    print(f'-> {out / "imbalance.json"}, {out / "figure4.png"}')
    return 0
