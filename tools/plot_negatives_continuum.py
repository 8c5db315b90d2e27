"""Draw AP against the mining temperature from a `negatives` suite's records: the continuum
from hard 1:3 mining (temperature 0) to a budget spread evenly, beside no mining and focal loss.

    python tools/plot_negatives_continuum.py \
        [--results docs/results/quick/negatives/results.json] [--out .../continuum.png]

The records are those `python tools/reproduce.py negatives` writes (OUT/SCALE/negatives/
results.json). Each seed is a grey point; blue is the mean ± sample standard deviation.
"""
import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

PREFIX = 'retinanet_r18_quick_'
# x position (log10 of the temperature; hard mining drawn one decade left of 0.1) and label.
CONTINUUM = {'ce_hard1to3': (-2.0, 'hard\n(T = 0)'), 'ce_soft_t01': (-1.0, '0.1'),
             'ce_soft_t1': (0.0, '1'), 'ce_soft_t10': (1.0, '10'),
             'ce_soft_t100': (2.0, '100')}
BANDS = {'ce_alpha75': ('no mining (CE, alpha .75)', 'C3'),
         'focal': ('focal loss (gamma 2, alpha .25)', 'C2')}


def _aps(runs: list[dict], name: str) -> list[float]:
    return [r['AP'] for r in runs if r['name'] == PREFIX + name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--results', default='docs/results/quick/negatives/results.json')
    parser.add_argument('--out', default=None, help='default: continuum.png beside --results')
    args = parser.parse_args()
    results = Path(args.results)
    runs = json.loads(results.read_text())['runs']
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    xs, means = [], []
    for name, (x, _) in CONTINUUM.items():
        aps = _aps(runs, name)
        if not aps:
            continue
        ax.scatter([x] * len(aps), aps, color='0.6', s=12, zorder=2)
        std = statistics.stdev(aps) if len(aps) > 1 else 0.0
        xs.append(x)
        means.append(statistics.mean(aps))
        ax.errorbar([x], [means[-1]], yerr=[std], fmt='o', color='C0', capsize=4, zorder=3)
    ax.plot(xs, means, color='C0', alpha=0.5, zorder=1,
            label='CE + 1:3 budget, soft at temperature T')
    for name, (label, color) in BANDS.items():
        aps = _aps(runs, name)
        if len(aps) > 1:
            mean, std = statistics.mean(aps), statistics.stdev(aps)
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.12)
            ax.axhline(mean, color=color, lw=1, label=f'{label}, {len(aps)} seeds')
    ax.set_xticks([x for x, _ in CONTINUUM.values()], [t for _, t in CONTINUUM.values()])
    ax.set_xlabel('mining temperature (budgets; log scale)')
    ax.set_ylabel('COCO box AP')
    ax.set_title('How hard to mine negatives: AP over the temperature', loc='left', fontsize=10)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7, loc='lower left')
    fig.tight_layout()
    out = Path(args.out) if args.out else results.with_name('continuum.png')
    fig.savefig(out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
