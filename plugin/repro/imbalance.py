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

Effective negatives per positive (one axis for every way of treating negatives). For a model's
scores on a split, with anchors assigned as in training (positive, negative, ignored), a method
(a head, its classification loss and its sampler, taken from a config) gives every anchor a
weight in the classification gradient. Relative to plain sigmoid cross entropy on the same
scores (normalized as RetinaNet normalizes it: by the batch's positive anchors, at least 1 per
image), anchor i's weight is

    w_i = sum_c |dL_method / dx_ic| / sum_c |dCE / dx_ic|,   |dCE / dx_ic| = |sigmoid(x_ic) - y_ic|,

summed over the C sigmoid outputs of its row: mining keeps or weighs whole anchors, and the
counts it is compared with (N_neg / N_pos, SSD's 3 per positive) count anchors, so with row
sums plain CE weighs every anchor 1 and mining weighs it by exactly its sampler weight. The
effective number of negatives per positive is E = (sum of w over negative anchors) / (sum of w
over positive anchors) over the split: plain CE gives N_neg / N_pos, hard 1:3 mining 3, soft
mining its same budget (3 where an image has enough negatives), focal loss what its
modulating factor leaves (little where the negatives are easy). The spread
S = ESS(negatives) / ESS(positives), with Kish's effective sample size ESS = (sum w)^2 /
sum w^2, counts over how many anchors that weight is spread: 3 for hard mining, rising to
N_neg / N_pos as soft mining's temperature grows.
:class:`EffectiveNegatives` computes both with autograd through each method's own head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ['EFFECTIVE_NEGATIVE_METHODS', 'FIGURE4_GAMMAS', 'AnchorBatch', 'EffectiveNegatives',
           'SignedLogits', 'WeightSums', 'anchor_rows', 'anchor_weights', 'collect', 'focal_terms',
           'imbalance_stats', 'method_head', 'normalized_loss_cdf', 'plot_figure4']

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
            max_negatives_per_image: int = 20000, seed: int = 0,
            on_batch: Callable[[AnchorBatch], None] | None = None) -> SignedLogits:
    """Run the model of ``cfg`` (weights from ``checkpoint``; None: as initialized) over the
    first ``max_images`` images of ``split`` ('train' or 'val', both with the test pipeline)
    and gather signed logits and anchor counts, with the head's own target assignment.
    ``on_batch`` (e.g. :meth:`EffectiveNegatives.add`) sees each batch's scores and targets."""
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
        cls_scores, bbox_preds = head(model.extract_feat(data['inputs']))
        metas = [s.metainfo for s in samples]
        gt_instances = [s.gt_instances for s in samples]
        anchors, valid = head.get_anchors([c.shape[-2:] for c in cls_scores], metas,
                                          device=cls_scores[0].device)
        labels, weights = head.get_targets(anchors, valid, gt_instances, metas)[:2]
        labels, weights = torch.cat(labels, 1), torch.cat(weights, 1)
        logits = anchor_rows(cls_scores, head.num_classes)
        if on_batch is not None:
            on_batch(AnchorBatch(cls_scores, bbox_preds, gt_instances, metas, labels, weights))
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


# The negatives grid's ways of treating negatives, as the configs that train them (paths from
# the repository root); each gives the analyzed model its head type, classification loss and
# train_cfg (:func:`method_head`).
EFFECTIVE_NEGATIVE_METHODS = tuple(
    f'configs/negatives/retinanet_r18_quick_{name}.py' for name in (
        'ce_hard1to3', 'ce_soft_t01', 'ce_soft_t1', 'ce_soft_t10', 'ce_soft_t100', 'focal',
        'ce_alpha75', 'focal_hard1to3', 'ghmc', 'dr_loss'))


def anchor_rows(maps: Sequence[Tensor], channels: int) -> Tensor:
    """Per-level maps [(B, a * channels, H, W)] -> (B, A, channels), the anchors in the order
    of the head's targets."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps], 1)


@dataclass
class AnchorBatch:
    """One batch as :func:`collect` sees it: the head's outputs per level (cls_scores
    (B, a * C, H, W), bbox_preds), the ground truth and image metas its loss takes, and the
    training targets per anchor, labels (B, A) (C: background) and label_weights (B, A)
    (0: ignored)."""

    cls_scores: list[Tensor]
    bbox_preds: list[Tensor]
    gt_instances: list[Any]
    metas: list[dict]
    labels: Tensor
    label_weights: Tensor


def anchor_weights(gradient: Tensor, logits: Tensor, labels: Tensor,
                   normalizer: float) -> Tensor:
    """Each anchor's weight in a method's classification gradient relative to plain sigmoid
    cross entropy on the same scores (module docstring), in float64.

    Args:
        gradient: (B, A, C) d loss / d logit of the method.
        logits: (B, A, C) the scores.
        labels: (B, A) class indices, C = background.
        normalizer: what the cross entropy is divided by (RetinaNet: the batch's positive
            anchors, at least 1 per image).

    Returns:
        (B, A) sum_c |gradient| / sum_c |sigmoid(x) - y| * normalizer; 0 where the cross
        entropy's gradient underflows to 0.
    """
    num_classes = logits.shape[-1]
    target = F.one_hot(labels.long(), num_classes + 1)[..., :num_classes]
    ce = (torch.sigmoid(logits.double()) - target).abs().sum(-1) / normalizer
    method = gradient.double().abs().sum(-1)
    return torch.where(ce > 0, method / ce.clamp(min=torch.finfo(torch.float64).tiny), 0.0)


@dataclass
class WeightSums:
    """Sums over a split of the anchor weights w and w^2, positives and negatives apart
    (ignored anchors left out)."""

    positive: float = 0.0
    negative: float = 0.0
    positive_squares: float = 0.0
    negative_squares: float = 0.0

    def add(self, weights: Tensor, labels: Tensor, label_weights: Tensor,
            num_classes: int) -> None:
        """Add (B, A) anchor weights with their labels (C: background) and label_weights."""
        candidate = label_weights > 0
        positive = candidate & (labels < num_classes)
        w = weights.double()
        self.positive += float(w[positive].sum())
        self.negative += float(w[candidate & ~positive].sum())
        self.positive_squares += float(w[positive].square().sum())
        self.negative_squares += float(w[candidate & ~positive].square().sum())

    def per_positive(self) -> float:
        """E: the negatives' weight over the positives' (inf without positive weight)."""
        return self.negative / self.positive if self.positive > 0 else float('inf')

    def spread_per_positive(self) -> float:
        """S: Kish's effective sample size of the negatives' weights over the positives'."""
        def size(total: float, squares: float) -> float:
            return total * total / squares if squares > 0 else 0.0

        positive = size(self.positive, self.positive_squares)
        return size(self.negative, self.negative_squares) / positive if positive else float('inf')


def method_head(model_cfg: Any, method_config: str | Path) -> torch.nn.Module:
    """The analyzed model's head (anchors, classes, channels from ``model_cfg``, a model
    config) trained as ``method_config`` trains: that config's ``model.bbox_head.type``,
    ``model.bbox_head.loss_cls`` and ``model.train_cfg`` (assigner, sampler)."""
    from mmdet.registry import MODELS
    from mmengine.config import Config

    import plugin  # noqa: F401  (registrations)

    method = Config.fromfile(str(method_config)).model
    head_cfg = copy.deepcopy(model_cfg.bbox_head)
    head_cfg['type'] = method.bbox_head.type
    head_cfg['loss_cls'] = copy.deepcopy(method.bbox_head.loss_cls)
    head_cfg['train_cfg'] = copy.deepcopy(method.train_cfg)
    head_cfg['test_cfg'] = copy.deepcopy(model_cfg.get('test_cfg'))
    return MODELS.build(head_cfg)


class EffectiveNegatives:
    """Effective negatives per positive (E) and their spread (S) of several methods on one
    model's scores (module docstring): hand it every batch (:meth:`add`, e.g. as
    :func:`collect`'s ``on_batch``), then read :meth:`result`.

    Each method's gradient is autograd's, through its own head's ``loss_by_feat`` on the
    scores in float64: the same target assignment, sampler (``plugin.ops``' mining rules),
    loss calls and state as in training (GHM-C's moving average of the gradient density runs
    on over the batches). The losses' normalizers are constant within a batch, so they change
    E only through how batches are pooled.

    Args:
        heads: method name -> head (:func:`method_head`).
    """

    def __init__(self, heads: dict[str, torch.nn.Module]) -> None:
        self.heads = heads
        self.sums = {name: WeightSums() for name in heads}

    def add(self, batch: AnchorBatch) -> None:
        """Add one batch's anchor weights under every method."""
        num_classes = next(iter(self.heads.values())).num_classes
        positive = (batch.labels < num_classes) & (batch.label_weights > 0)
        # RetinaNet's normalizer (mmdet's avg_factor): the positives, at least 1 per image.
        normalizer = float(positive.sum(1).clamp(min=1).sum())
        bbox_preds = [b.detach() for b in batch.bbox_preds]
        with torch.enable_grad():
            scores = [s.detach().double().requires_grad_() for s in batch.cls_scores]
            logits = anchor_rows(scores, num_classes).detach()
            for name, head in self.heads.items():
                loss_cls = head.loss_by_feat(scores, bbox_preds, batch.gt_instances,
                                             batch.metas)['loss_cls']
                total = sum(loss_cls) if isinstance(loss_cls, (list, tuple)) else loss_cls
                gradient = anchor_rows(torch.autograd.grad(total, scores), num_classes)
                self.sums[name].add(anchor_weights(gradient, logits, batch.labels, normalizer),
                                    batch.labels, batch.label_weights, num_classes)

    def result(self) -> dict[str, dict[str, float]]:
        """Per method: E ('per_positive') and S ('spread_per_positive')."""
        return {name: {'per_positive': sums.per_positive(),
                       'spread_per_positive': sums.spread_per_positive()}
                for name, sums in self.sums.items()}
