"""Command line of ``tools/reproduce.py``: a mistake ends in one line, not a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from plugin.data.errors import MissingDataError

from .runner import LAUNCHERS, Launch, RunFailedError, run_suite
from .scales import ScaleOptions
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
                        'are on COCO in --data-root; coco-short: the same over 1/8 of their '
                        'schedule, each update over the config\'s batch (one GPU: a day for 7 '
                        'R50 configs, estimated)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--out', default='work_dirs/repro', help='output folder')
    parser.add_argument('--data-root', help='data folder (quick: default data/quick_scale, '
                        'generated when absent; coco128 / coco: required, COCO layout)')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help='run only these configs of the suite (file names without .py)')
    parser.add_argument('--iters', type=int,
                        help='a shorter schedule of the same shape (coco scales: a smoke run, '
                        'evaluated on a few images)')
    parser.add_argument('--no-pretrained', dest='pretrained', action='store_false',
                        help='coco scales: random backbone instead of the ImageNet weights the '
                        'configs name (smoke runs on a machine without them)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='coco: how each run starts on the GPUs')
    parser.add_argument('--gpus', type=int, default=1, help='GPUs per run (with --launcher)')
    parser.add_argument('--partition', help='slurm partition (--launcher slurm)')
    parser.add_argument('--port', type=int, default=29500,
                        help='torch.distributed master port (--launcher pytorch)')
    parser.add_argument('--dry-run', action='store_true',
                        help='write the run folders and print the commands only')
    parser.add_argument('--report-only', action='store_true',
                        help='run nothing; rewrite the tables and figure from the records '
                        '(of the runs as long as --iters, or the configs\' own schedule)')
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
        if args.gpus > 1 and args.launcher == 'none':
            raise ValueError(f'--gpus {args.gpus} needs --launcher pytorch or slurm (without '
                             f'one, each run is a single process)')
        data_root = Path(args.data_root or ROOT / 'data' / 'quick_scale').resolve()
        options = ScaleOptions(scale=args.scale, data_root=str(data_root),
                               max_iters=args.iters, repo_root=str(ROOT), gpus=args.gpus,
                               pretrained=args.pretrained)
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
