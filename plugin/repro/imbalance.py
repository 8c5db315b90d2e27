"""How imbalanced a dense detector's classification problem is, and what focal loss does to it.

For a sigmoid head every (anchor, class) pair is one binary example: the label class of a
positive anchor is a positive example, every other pair of a non-ignored anchor a negative one.
With p the predicted probability, p_t is p for a positive and 1 - p for a negative; an example
is easy when p_t > 0.5. Focal loss is FL = -alpha_t (1 - p_t)^gamma log p_t (gamma 0: cross
entropy); its gradient with respect to the logit has magnitude
alpha_t (1 - p_t)^gamma (1 - p_t - gamma p_t log p_t).

Everything is computed from the *signed logit* z (z = x for a positive, -x for a negative, so
p_t = sigmoid(z)) in float64: the loss of a very easy negative stays exact.

:func:`collect` runs a model over a dataset split and gathers the signed logits;
:func:`imbalance_stats` and :func:`normalized_loss_cdf` are the math (plain torch).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ['FIGURE4_GAMMAS', 'SignedLogits', 'collect', 'focal_terms', 'imbalance_stats',
           'normalized_loss_cdf', 'plot_figure4']

FIGURE4_GAMMAS = (0.0, 0.5, 1.0, 2.0)


def focal_terms(z: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Per example (signed logit ``z``): focal loss and the magnitude of its gradient with
    respect to the logit, without alpha, in float64."""
    z = z.double()
    log_pt = -F.softplus(-z)
    one_minus_pt = torch.sigmoid(-z)
    pt = torch.sigmoid(z)
    focus = one_minus_pt.pow(gamma)
    return -focus * log_pt, focus * (one_minus_pt - gamma * pt * log_pt)


@dataclass
class SignedLogits:
    """What :func:`collect` gathers: the signed logits of every positive example and of the
    negative examples (all, or a uniform sample of at most ``max_negatives`` per image), and
    the anchor counts per image."""

    positives: Tensor
    negatives: Tensor
    positive_anchors: list[int] = field(default_factory=list)
    negative_anchors: list[int] = field(default_factory=list)
    # Negative examples per image before sampling; the totals of the shares are scaled by it.
    negative_examples: list[int] = field(default_factory=list)


def imbalance_stats(sample: SignedLogits, gammas: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0),
                    alpha: float | None = None) -> dict[str, Any]:
    """Anchor counts and, per gamma, the shares of the classification loss and of its gradient
    from negatives and from easy negatives (p_t > 0.5). ``alpha`` weights positives by alpha
    and negatives by 1 - alpha (None: unweighted). Sampled negatives stand for all of them
    (their sums are scaled by examples / sampled)."""
    num_images = len(sample.positive_anchors)
    pos, neg = sum(sample.positive_anchors), sum(sample.negative_anchors)
    scale = sum(sample.negative_examples) / max(sample.negatives.numel(), 1)
    w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    easy = sample.negatives > 0
    out: dict[str, Any] = {
        'images': num_images,
        'positive_anchors_per_image': pos / max(num_images, 1),
        'negative_anchors_per_image': neg / max(num_images, 1),
        'negatives_per_positive': neg / pos if pos else float('inf'),
        'easy_negative_example_share': float(easy.double().mean()) if easy.numel() else 0.0,
        'alpha': alpha,
        'per_gamma': {},
    }
    for gamma in gammas:
        shares = {}
        for index, what in enumerate(('loss', 'gradient')):
            p_terms = focal_terms(sample.positives, gamma)[index] * w_pos
            n_terms = focal_terms(sample.negatives, gamma)[index] * w_neg * scale
            total = p_terms.sum() + n_terms.sum()
            shares[f'{what}_share_negatives'] = float(n_terms.sum() / total)
            shares[f'{what}_share_easy_negatives'] = float(n_terms[easy].sum() / total)
        out['per_gamma'][str(gamma)] = shares
    return out


def normalized_loss_cdf(z: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """The paper's Figure 4 curve: losses sorted from low to high, their cumulative sum over
    the total, against the fraction of examples. Returns (fraction, cumulative share)."""
    loss = focal_terms(z, gamma)[0].sort().values
    cumulative = loss.cumsum(0)
    fraction = torch.arange(1, len(loss) + 1, dtype=torch.float64) / len(loss)
    return fraction, cumulative / cumulative[-1]


def plot_figure4(sample: SignedLogits, path: str, gammas: Sequence[float] = FIGURE4_GAMMAS,
                 title: str = '') -> None:
    """Cumulative normalized loss over positive and over negative examples, one curve per
    gamma (the focal-loss paper's Figure 4), as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, z, what in ((axes[0], sample.positives, 'positive'),
                        (axes[1], sample.negatives, 'negative')):
        for gamma in gammas:
            fraction, share = normalized_loss_cdf(z, gamma)
            # A few thousand points draw the same curve; the last one (share 1) stays.
            points = torch.linspace(0, len(fraction) - 1, min(len(fraction), 4000)).long()
            ax.plot(fraction[points].numpy(), share[points].numpy(), label=f'gamma = {gamma:g}')
        ax.set_xlabel(f'fraction of {what} examples')
        ax.set_ylabel('cumulative normalized loss')
        ax.set_title(f'{what} examples ({len(z):,})')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def collect(cfg: Any, checkpoint: str | None, split: str = 'val', max_images: int = 200,
            max_negatives_per_image: int = 20000, seed: int = 0) -> SignedLogits:
    """Run the model of ``cfg`` (weights from ``checkpoint``; None: as initialized) over the
    first ``max_images`` images of ``split`` ('train' or 'val', both with the test pipeline)
    and gather signed logits and anchor counts, with the head's own target assignment."""
    from mmdet.registry import MODELS
    from mmengine.runner import Runner, load_checkpoint

    import plugin  # noqa: F401  (registrations, checkpoint loading)

    if split not in ('train', 'val'):
        raise ValueError(f"split '{split}'; allowed: train, val")
    model = MODELS.build(cfg.model)
    model.init_weights()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.eval()
    head = model.bbox_head
    if not head.use_sigmoid_cls:
        raise ValueError(f'{type(head).__name__} uses softmax scores; the analysis covers '
                         f'sigmoid heads (loss_cls with use_sigmoid=True)')
    # A run folder's config may hold its evaluation loader under test_dataloader only.
    evaluation = cfg.get('val_dataloader') or cfg.test_dataloader
    loader_cfg = copy.deepcopy(evaluation if split == 'val' else cfg.train_dataloader)
    # The test pipeline on either split: no random flips, annotations loaded.
    loader_cfg.dataset.pipeline = evaluation.dataset.pipeline
    loader_cfg.dataset.indices = max_images
    loader_cfg.sampler = dict(type='DefaultSampler', shuffle=False)
    loader_cfg.num_workers, loader_cfg.persistent_workers = 0, False
    loader = Runner.build_dataloader(loader_cfg)
    generator = torch.Generator().manual_seed(seed)
    positives, negatives = [], []
    sample = SignedLogits(torch.empty(0), torch.empty(0))
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        samples = data['data_samples']
        cls_scores, _ = head(model.extract_feat(data['inputs']))
        metas = [s.metainfo for s in samples]
        anchors, valid = head.get_anchors([c.shape[-2:] for c in cls_scores], metas,
                                          device=cls_scores[0].device)
        labels, weights = head.get_targets(anchors, valid, [s.gt_instances for s in samples],
                                           metas)[:2]
        labels, weights = torch.cat(labels, 1), torch.cat(weights, 1)
        logits = torch.cat([c.permute(0, 2, 3, 1).reshape(c.shape[0], -1, head.num_classes)
                            for c in cls_scores], 1)
        for image in range(logits.shape[0]):
            keep = weights[image] > 0
            x, y = logits[image][keep], labels[image][keep]
            is_pos = y < head.num_classes
            target = F.one_hot(y.clamp(max=head.num_classes), head.num_classes + 1)[:, :-1]
            signed = torch.where(target.bool(), x, -x)
            positives.append(signed[target.bool()])
            neg = signed[~target.bool()]
            sample.positive_anchors.append(int(is_pos.sum()))
            sample.negative_anchors.append(int((~is_pos).sum()))
            sample.negative_examples.append(neg.numel())
            if neg.numel() > max_negatives_per_image:
                neg = neg[torch.randperm(neg.numel(), generator=generator)
                          [:max_negatives_per_image]]
            negatives.append(neg)
    sample.positives, sample.negatives = torch.cat(positives), torch.cat(negatives)
    return sample
