"""MiningRetinaHead and MiningSSDHead against a per-image reference written here.

The reference loops over images and anchors in float64: the loss of each anchor, the
selection rule (hard negatives, OHEM with a sequential NMS, soft weights), the normalizer
(kept positives, at least 1 per image) and the two losses. Problems have ignored anchors
(label weight 0) with the highest losses, images without objects, batch sizes and budgets
that do not divide evenly, fractional ratios and a minimum of negatives. The head's
``avg_factor`` is read off its loss call and asserted too.
"""
import copy
import math

import pytest
import torch
from helpers import mmdet_config
from mmdet.registry import MODELS
from reference import soft_weights_of_image

import plugin  # noqa: F401

NUM_CLASSES = 5
NUM_ANCHORS = 160


def _head(kind, sampler, loss_cls=None):
    base = 'retinanet/retinanet_r50_fpn_1x_coco.py' if kind == 'retina' else 'ssd/ssd300_coco.py'
    cfg = mmdet_config(base)
    head = copy.deepcopy(cfg.model.bbox_head)
    head.update(type='MiningRetinaHead' if kind == 'retina' else 'MiningSSDHead',
                num_classes=NUM_CLASSES, train_cfg=copy.deepcopy(cfg.model.train_cfg),
                test_cfg=cfg.model.test_cfg)
    if kind == 'retina':
        head.update(in_channels=8, feat_channels=8, stacked_convs=1,
                    loss_cls=loss_cls or dict(type='SigmoidFocalLoss', gamma=0.0, alpha=None))
    else:
        head.update(in_channels=(8,) * 6)
        if loss_cls is not None:
            head.loss_cls = loss_cls
    head.train_cfg.sampler = sampler
    return MODELS.build(head)


def _problem(num_images, seed, classes):
    """A batch in the heads' layout, with ignored anchors that have the highest scores."""
    g = torch.Generator().manual_seed(seed)
    shape = (num_images, NUM_ANCHORS)
    labels = torch.full(shape, NUM_CLASSES)
    positive = torch.rand(shape, generator=g) < 0.06
    positive[1] = False  # an image without objects
    positive[0, :12] = True  # an image with many positives
    labels[positive] = torch.randint(0, NUM_CLASSES, (int(positive.sum()),), generator=g)
    ignored = (torch.rand(shape, generator=g) < 0.25) & ~positive
    label_weights = (~ignored).float()
    cls_score = torch.randn(num_images, NUM_ANCHORS, classes, generator=g) * 2
    cls_score[ignored] += 6  # the hardest "negatives" are ignored: never to be selected
    xy = torch.rand(num_images, NUM_ANCHORS, 2, generator=g) * 60
    anchors = torch.cat([xy, xy + 8 + torch.rand(num_images, NUM_ANCHORS, 2, generator=g) * 16],
                        2)
    bbox_weights = positive.float().unsqueeze(2).expand(-1, -1, 4).clone()
    return dict(cls_score=cls_score.requires_grad_(),
                bbox_pred=torch.randn(num_images, NUM_ANCHORS, 4, generator=g,
                                      requires_grad=True),
                anchors=anchors, labels=labels, label_weights=label_weights,
                bbox_targets=torch.randn(num_images, NUM_ANCHORS, 4, generator=g),
                bbox_weights=bbox_weights, avg_factor=float(positive.sum()))


def _anchor_loss(scores, label, softmax):
    """Cross entropy of one anchor from its list of logits, float64 (math only)."""
    if softmax:
        top = max(scores)
        return top + math.log(sum(math.exp(s - top) for s in scores)) - scores[label]

    def softplus(x):
        return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    return sum(softplus(-s) if c == label else softplus(s) for c, s in enumerate(scores))


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _select_image(losses, labels, label_weights, boxes, sampler):
    """{anchor: weight} of one image under the sampler's rule, by plain loops."""
    positives = [a for a in range(NUM_ANCHORS) if label_weights[a] > 0 and labels[a] < NUM_CLASSES]
    negatives = [a for a in range(NUM_ANCHORS) if label_weights[a] > 0
                 and labels[a] == NUM_CLASSES]
    mode = sampler.get('mode', 'hard_negative')
    ratio, min_neg = sampler.get('neg_pos_ratio', 3), sampler.get('min_neg_per_image', 0)
    if mode == 'ohem':
        order = sorted(positives + negatives, key=lambda a: -losses[a])
        survivors = []
        for a in order:
            if all(_iou(boxes[a], boxes[k]) <= sampler['nms_thr'] for k in survivors):
                survivors.append(a)
        batch = sampler['batch_size']
        if ratio is None:
            return {a: 1.0 for a in survivors[:batch]}
        kept_pos = [a for a in survivors if a in positives][:math.ceil(batch / (1 + ratio))]
        num_neg = min(max(math.floor(ratio * len(kept_pos)), min_neg), batch - len(kept_pos))
        kept_neg = [a for a in survivors if a in negatives][:num_neg]
        return {a: 1.0 for a in kept_pos + kept_neg}
    budget = min(max(math.floor(ratio * len(positives)), min_neg), len(negatives))
    chosen = {a: 1.0 for a in positives}
    if mode == 'soft':
        weights = soft_weights_of_image(losses, [a in negatives for a in range(NUM_ANCHORS)],
                                        budget, sampler['temperature'])
        chosen.update({a: weights[a] for a in negatives})
    else:
        chosen.update({a: 1.0 for a in sorted(negatives, key=lambda a: -losses[a])[:budget]})
    return chosen


def _reference(problem, sampler, softmax, box_loss, level_sizes=None):
    """Per-part losses (per image, or per level given ``level_sizes``) and the normalizer."""
    num_images = problem['labels'].shape[0]
    levels = [lv for lv, size in enumerate(level_sizes or []) for _ in range(size)]
    num_parts = len(level_sizes) if level_sizes else num_images
    part_cls, part_box, normalizer = [0.0] * num_parts, [0.0] * num_parts, 0
    for b in range(num_images):
        scores = problem['cls_score'][b].double().tolist()
        labels = problem['labels'][b].tolist()
        label_weights = problem['label_weights'][b].tolist()
        losses = [_anchor_loss(scores[a], labels[a], softmax) * label_weights[a]
                  for a in range(NUM_ANCHORS)]
        chosen = _select_image(losses, labels, label_weights, problem['anchors'][b].tolist(),
                               sampler)
        kept_positives = [a for a in chosen if labels[a] < NUM_CLASSES]
        normalizer += max(len(kept_positives), 1)
        pred, target = problem['bbox_pred'][b].double(), problem['bbox_targets'][b].double()
        for a, weight in chosen.items():
            part = levels[a] if level_sizes else b
            part_cls[part] += losses[a] * weight
            if a in kept_positives:
                part_box[part] += float(box_loss(pred[a], target[a]).sum())
    return ([loss / normalizer for loss in part_cls], [loss / normalizer for loss in part_box],
            normalizer)


def _l1(pred, target):
    return (pred - target).abs()


def _smooth_l1(pred, target, beta=1.0):
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def _run_head(head, problem, level_sizes=None):
    """The head's losses and the normalizer (avg_factor) it divided them by."""
    seen = []
    normalizer = head._normalizer

    def spy(*args, **kwargs):
        seen.append(normalizer(*args, **kwargs))
        return seen[-1]

    head._normalizer = spy
    losses = head.loss_by_batch(**problem, level_sizes=level_sizes)
    (avg_factor,) = seen
    return losses, avg_factor


SAMPLERS = {
    'hard-1to3': dict(neg_pos_ratio=3),
    'hard-fractional-min': dict(neg_pos_ratio=1.5, min_neg_per_image=7),
    'soft-t0.3': dict(mode='soft', temperature=0.3, neg_pos_ratio=3),
    'soft-t4-fractional-min': dict(mode='soft', temperature=4.0, neg_pos_ratio=2.5,
                                   min_neg_per_image=5),
    # batch 10 with ratio 3: the positive cap is ceil(10 / 4) = 3, not 2
    'ohem-ratio-min': dict(mode='ohem', batch_size=10, nms_thr=0.5, neg_pos_ratio=3,
                           min_neg_per_image=6),
    'ohem-no-ratio': dict(mode='ohem', batch_size=9, nms_thr=0.6, neg_pos_ratio=None),
}


@pytest.mark.parametrize('name', list(SAMPLERS))
@pytest.mark.parametrize('kind', ['retina', 'ssd'])
def test_mining_head_losses_and_normalizer_equal_a_per_image_loop(kind, name):
    sampler = dict(type='HardNegativeSampler', **SAMPLERS[name])
    softmax = kind == 'ssd'
    head = _head(kind, sampler)
    problem = _problem(num_images=3, seed=len(name), classes=NUM_CLASSES + softmax)
    # RetinaHead lists its losses per level, SSDHead per image
    level_sizes = [100, 45, 15] if kind == 'retina' else None
    losses, avg_factor = _run_head(head, problem, level_sizes)
    expected_cls, expected_box, normalizer = _reference(
        problem, SAMPLERS[name], softmax, _smooth_l1 if softmax else _l1, level_sizes)
    assert avg_factor == normalizer
    for key, expected in (('loss_cls', expected_cls), ('loss_bbox', expected_box)):
        assert isinstance(losses[key], list) and len(losses[key]) == 3
        torch.testing.assert_close(torch.stack(losses[key]).double(),
                                   torch.tensor(expected, dtype=torch.float64),
                                   rtol=2e-5, atol=1e-12)


def test_ohem_that_drops_positives_normalizes_by_the_kept_ones():
    sampler = SAMPLERS['ohem-ratio-min']
    problem = _problem(num_images=3, seed=1, classes=NUM_CLASSES)
    head = _head('retina', dict(type='HardNegativeSampler', **sampler))
    _, avg_factor = _run_head(head, problem)
    assert avg_factor < problem['avg_factor'], 'the problem must have OHEM drop positives'
    assert avg_factor == _reference(problem, sampler, False, _l1)[2]


def test_without_a_mining_sampler_every_anchor_trains_and_no_positives_divide_by_one():
    head = _head('retina', dict(type='PseudoSampler'))
    problem = _problem(num_images=2, seed=3, classes=NUM_CLASSES)
    problem['labels'].fill_(NUM_CLASSES)
    problem['bbox_weights'].zero_()
    problem['avg_factor'] = 0.0  # no positives anywhere
    losses, avg_factor = _run_head(head, problem)
    assert avg_factor == 1.0
    x = problem['cls_score'].detach().double()
    expected = (torch.nn.functional.softplus(x).sum(2) * problem['label_weights']).sum()
    torch.testing.assert_close(sum(losses['loss_cls']).double(), expected, rtol=1e-5, atol=0)
    assert sum(losses['loss_bbox']) == 0
