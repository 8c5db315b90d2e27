"""Command line of ``tools/analyze_imbalance.py``: the class imbalance of a model on a data
split (:mod:`plugin.repro.imbalance`), printed and written as JSON and a figure."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .records import portable_path, repo_commit

__all__ = ['main']

ROOT = Path(__file__).resolve().parents[2]


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
    parser.add_argument('--methods', nargs='+', metavar='CONFIG',
                        help='configs whose head type, loss_cls and train_cfg (sampler) give '
                        'the methods of the effective-negatives table (default: the quick '
                        'negatives grid, configs/negatives/retinanet_r18_quick_*.py)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries, as in tools/train.py')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``tools/analyze_imbalance.py``; returns the exit status."""
    import json

    from mmengine.config import Config

    from .imbalance import (EFFECTIVE_NEGATIVE_METHODS, EffectiveNegatives, collect,
                            imbalance_stats, method_head, plot_figure4)

    parser = _analysis_parser()
    args = parser.parse_args(argv)
    checkpoint = None if args.checkpoint == 'none' else args.checkpoint
    for path, what in ((args.config, 'config file'), (checkpoint, 'checkpoint')):
        if path is not None and not Path(path).is_file():
            parser.error(f"{what} '{path}' does not exist")
    methods = args.methods or [str(ROOT / m) for m in EFFECTIVE_NEGATIVE_METHODS]
    for path in methods:
        if not Path(path).is_file():
            parser.error(f"--methods: config file '{path}' does not exist")
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        effective = EffectiveNegatives({Path(m).stem: method_head(cfg.model, m)
                                        for m in methods})
        sample = collect(cfg, checkpoint, args.split, args.max_images,
                         args.max_negatives_per_image, on_batch=effective.add)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    stats = imbalance_stats(sample, args.gammas, args.alpha)
    stats['effective_negatives'] = {name: dict(values, config=portable_path(method, ROOT))
                                    for (name, values), method
                                    in zip(effective.result().items(), methods)}
    # What a rerun needs: the code and the command, with paths as another machine reads them.
    stats.update(config=portable_path(args.config, ROOT),
                 checkpoint=args.checkpoint if checkpoint is None
                 else portable_path(checkpoint, ROOT),
                 split=args.split, commit=repo_commit(ROOT),
                 command=_portable_command(sys.argv[1:] if argv is None else argv))
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
    print(_effective_negatives_table(stats))
    print(f'-> {out / "imbalance.json"}, {out / "figure4.png"}')
    return 0


def _portable_command(argv: Sequence[str]) -> str:
    """The command line, its existing paths as :func:`portable_path` writes them."""
    args = [portable_path(a, ROOT) if Path(a).exists() else a for a in argv]
    return shlex.join(['python', 'tools/analyze_imbalance.py', *args])


def _effective_negatives_table(stats: dict) -> str:
    """The effective-negatives table: per method, E and S (plugin.repro.imbalance)."""
    rows = [('method', 'effective negatives per positive', 'spread per positive'),
            ('plain CE (reference)', f"{stats['negatives_per_positive']:.4g}",
             f"{stats['negatives_per_positive']:.4g}")]
    rows += [(name, f"{v['per_positive']:.4g}", f"{v['spread_per_positive']:.4g}")
             for name, v in stats['effective_negatives'].items()]
    width = max(len(row[0]) for row in rows)
    return '\n'.join(f'{a:<{width}} | {b:>32} | {c:>19}' for a, b, c in rows)
