"""Draw AP against effective negatives per positive: every way of treating negatives (hard and
soft mining, focal loss, alpha-balanced CE, GHM-C, DR Loss, ...) one labelled point on one axis.

    python tools/plot_effective_negatives.py \
        --results OUT/quick/negatives/results.json [MORE.json ...] \
        --point retinanet_r18_quick_ce_hard1to3 A/imbalance.json \
        --point retinanet_r18_quick_focal B/imbalance.json ... \
        [--x per_positive | spread_per_positive] [--seeds 5 6 7 8 9] [--out figure.png]

--point NAME IMBALANCE: NAME is a run name of the suite's records (the config's file name)
and the method's key in IMBALANCE's effective-negatives table, which
``tools/analyze_imbalance.py`` writes for that method's own trained model. The same NAME given
with several files (models of several seeds) is drawn at their mean, with a bar to the
smallest and largest. y: the records' COCO box AP, each seed a grey dot, mean +- sample
standard deviation in colour. Points that share an x (soft mining spends hard mining's
budget: E is 3 for all) are drawn side by side. x: E, the negatives' summed gradient weight per
positive's relative to plain cross entropy (default), or S, the spread of that weight
(plugin/repro/imbalance.py). Beside the figure, FIGURE.json holds every number drawn.
"""
import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

PREFIXES = ('retinanet_r18_quick_', 'retinanet_r50_fpn_600px_1x_coco_')
LABELS = {'ce_hard1to3': 'hard 1:3', 'ce_soft_t01': 'soft T 0.1', 'ce_soft_t1': 'soft T 1',
          'ce_soft_t10': 'soft T 10', 'ce_soft_t100': 'soft T 100',
          'ce_alpha75': 'CE, alpha .75', 'focal': 'focal', 'focal_hard1to3': 'focal + 1:3',
          'ghmc': 'GHM-C', 'dr_loss': 'DR Loss', 'pisa': 'PISA'}
# Colour by family: CE with mining (the soft continuum), focal loss, the rest.
FAMILIES = (('ce_hard1to3', 'C0'), ('ce_soft', 'C0'), ('focal', 'C2'), ('ce_alpha', 'C3'),
            ('ghmc', 'C4'), ('dr_loss', 'C1'))
X_LABELS = {'per_positive': 'effective negatives per positive (E, log scale)',
            'spread_per_positive': 'spread of the negatives\' weight per positive (S, log scale)'}
# Points closer than this factor in x are drawn side by side, this factor apart.
SAME_X, DODGE = 1.05, 1.25


def _short(name: str) -> str:
    for prefix in PREFIXES:
        name = name.removeprefix(prefix)
    return name


def _points(args: argparse.Namespace) -> dict[str, dict]:
    """Per NAME: x (mean over its imbalance files), their range, and its APs by seed."""
    runs = [r for path in args.results for r in json.loads(Path(path).read_text())['runs']]
    points: dict[str, dict] = {}
    for name, path in args.point:
        table = json.loads(Path(path).read_text()).get('effective_negatives', {})
        if name not in table:
            raise SystemExit(f"error: {path} has no effective negatives for '{name}' "
                             f"(it has: {', '.join(table) or 'none'})")
        point = points.setdefault(name, dict(x_values=[], imbalance=[]))
        point['x_values'].append(table[name][args.x])
        point['imbalance'].append(str(path))
    for name, point in points.items():
        aps: dict[int, float] = {}
        for run in runs:
            if run['name'] != name or (args.seeds and run['seed'] not in args.seeds):
                continue
            if run['seed'] in aps:
                raise SystemExit(f"error: two records of '{name}' seed {run['seed']} in "
                                 f"{', '.join(args.results)}")
            aps[run['seed']] = run['AP']
        if not aps:
            raise SystemExit(f"error: no AP records of '{name}'" +
                             (f' for seeds {args.seeds}' if args.seeds else ''))
        point.update(x=statistics.mean(point['x_values']), seeds=sorted(aps),
                     aps=[aps[s] for s in sorted(aps)], ap_mean=statistics.mean(aps.values()),
                     ap_std=statistics.stdev(aps.values()) if len(aps) > 1 else 0.0)
    return points


def _drawn_x(points: dict[str, dict]) -> dict[str, tuple[float, bool]]:
    """x where each point is drawn (its own, or spread side by side with those at its x)
    and whether it shares it."""
    drawn, group = {}, []
    for name in sorted(points, key=lambda n: points[n]['x']) + [None]:
        if name is not None and group and points[name]['x'] < SAME_X * points[group[0]]['x']:
            group.append(name)
            continue
        # Within a group in the order of LABELS (hard mining, then soft by temperature, ...).
        group.sort(key=lambda n: list(LABELS).index(_short(n)) if _short(n) in LABELS
                   else len(LABELS))
        for k, member in enumerate(group):
            drawn[member] = (points[group[0]]['x'] * DODGE ** (k - (len(group) - 1) / 2),
                             len(group) > 1)
        group = [name]
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', nargs='+', required=True,
                        help="suite records (results.json with 'runs')")
    parser.add_argument('--point', nargs=2, action='append', required=True,
                        metavar=('NAME', 'IMBALANCE_JSON'))
    parser.add_argument('--x', choices=tuple(X_LABELS), default='per_positive')
    parser.add_argument('--seeds', type=int, nargs='+', help='only these seeds (default: all)')
    parser.add_argument('--out', default='effective_negatives.png')
    args = parser.parse_args()
    points = _points(args)
    drawn = _drawn_x(points)
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=120)
    for name, point in points.items():
        x, shared = drawn[name]
        family = next((c for key, c in FAMILIES if _short(name).startswith(key)), 'C7')
        ax.scatter([x] * len(point['aps']), point['aps'], color='0.6', s=10, zorder=2)
        low, high = min(point['x_values']), max(point['x_values'])
        ax.errorbar([x], [point['ap_mean']], yerr=[point['ap_std']],
                    xerr=[[point['x'] - low], [high - point['x']]], fmt='o', color=family,
                    capsize=3, zorder=3)
        label = LABELS.get(_short(name), _short(name))
        if shared:  # side by side: upright labels above the bars
            ax.annotate(label, (x, point['ap_mean'] + point['ap_std']), xytext=(0, 4),
                        textcoords='offset points', rotation=90, ha='center', va='bottom',
                        fontsize=7)
        else:
            ax.annotate(label, (x, point['ap_mean']), xytext=(5, 3),
                        textcoords='offset points', fontsize=7)
    ax.set_xscale('log')
    ax.set_xlabel(X_LABELS[args.x])
    ax.set_ylabel('COCO box AP')
    # each method's seeds are in the .json beside the figure
    ax.set_title(f"AP (grey: one seed; mean +- std) against {X_LABELS[args.x].split(' (')[0]}",
                 loc='left', fontsize=9)
    ax.grid(alpha=0.3, which='both')
    ax.margins(x=0.15)
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, top + 0.3 * (top - bottom))  # room for the upright labels
    fig.tight_layout()
    out = Path(args.out)
    fig.savefig(out)
    out.with_suffix('.json').write_text(json.dumps(
        dict(x=args.x, results=args.results, seeds=args.seeds, points=points), indent=1) + '\n')
    print(f'wrote {out}, {out.with_suffix(".json")}')
    for name, point in sorted(points.items(), key=lambda item: item[1]['x']):
        print(f"{_short(name):<16} {args.x} {point['x']:10.4g}  AP {point['ap_mean']:.3f} "
              f"+- {point['ap_std']:.3f} (seeds {point['seeds']})")


if __name__ == '__main__':
    main()
