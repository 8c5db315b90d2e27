"""Draw the weight each negative gets against its loss rank: hard mining, soft mining at
several temperatures, and focal loss.

    python tools/plot_soft_negatives.py [--out docs/soft_negatives.png]

One image with 20,000 candidate negatives and 10 positives (a 1:3 budget of K = 30), their
logits drawn from N(-5, 2^2) (seed 0), ranked by sigmoid cross entropy. Mining weights come
from :func:`plugin.ops.soft_negative_weights`; focal loss's weight of a negative relative to
cross entropy is p^gamma (gamma = 2, alpha left out).
"""
import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from plugin.ops import soft_negative_weights  # noqa: E402

NUM_NEGATIVES, NUM_POSITIVES = 20_000, 10
TEMPERATURES = (0.1, 1.0, 10.0, 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/soft_negatives.png')
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(NUM_NEGATIVES, generator=g) * 2 - 5).sort(descending=True).values
    losses = F.softplus(logits)  # cross entropy of a negative, hardest first
    candidates = torch.ones(1, NUM_NEGATIVES, dtype=torch.bool)
    positive = torch.zeros(1, NUM_NEGATIVES, dtype=torch.bool)
    positive[0, :NUM_POSITIVES] = True  # only counted for the budget: weights come by rank
    negative = candidates & ~positive
    ranks = torch.arange(1, NUM_NEGATIVES - NUM_POSITIVES + 1)

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for temperature in (0.0,) + TEMPERATURES:
        weights = soft_negative_weights(losses.unsqueeze(0), positive, negative,
                                        temperature=temperature)[0][negative[0]]
        label = 'hard mining 1:3 (T = 0)' if temperature == 0 else f'soft, T = {temperature:g}'
        style = dict(color='black', lw=2) if temperature == 0 else dict(lw=1.5)
        ax.plot(ranks, weights, label=label, **style)
    focal = torch.sigmoid(logits[NUM_POSITIVES:]) ** 2
    ax.plot(ranks, focal, '--', color='gray',
            label=f'focal loss, gamma = 2: p^2 (sums to {float(focal.sum()):.1f})')
    ax.set_xscale('log')
    ax.set_xlabel('loss rank of the negative in its image (1 = hardest)')
    ax.set_ylabel('weight relative to cross entropy')
    ax.set_title('Negatives: 20,000 candidates, 10 positives, budget K = 30')
    ax.axvline(3 * NUM_POSITIVES, color='black', lw=0.5, ls=':')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
