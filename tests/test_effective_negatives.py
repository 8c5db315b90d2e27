"""Effective negatives per positive against closed forms, on hand-set scores.

A quick-start head (3 anchors per location, 6 classes, 128 px) sees a batch of three images
(two, one and no objects, boxes set by hand) with logits set by hand, all distinct. The
targets are mmdet's assignment; every expected number is written out here in float64 from
those logits and labels: plain CE gives N_neg / N_pos, hard 1:3 mining 3 and exactly the
three highest-CE negatives per positive, soft mining its budget (and hard mining's mask at a
tiny temperature), focal loss and alpha-balanced CE the ratio of their gradient formulas
to CE's, GHM-C a plain loop over its bins, DR loss autograd on the op over the whole batch.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from plugin.ops import dr_loss
from plugin.repro.imbalance import (AnchorBatch, EffectiveNegatives, WeightSums,
                                    anchor_rows, method_head)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / 'configs/quickstart/retinanet_r18_quickstart.py'
NEGATIVES = ROOT / 'configs/negatives'
CLASSES, SIZE = 6, 128


def _method(tmp_path: Path, base: str, override: str = '') -> Path:
    """A method config: configs/negatives/retinanet_r18_quick_<base>.py, plus ``override``."""
    path = tmp_path / f'{base}_{abs(hash(override))}.py'
    path.write_text(f"_base_ = '{NEGATIVES}/retinanet_r18_quick_{base}.py'\n{override}\n")
    return path


@pytest.fixture(scope='module')
def model_cfg():
    return Config.fromfile(str(QUICKSTART)).model


@pytest.fixture(scope='module')
def batch(model_cfg) -> AnchorBatch:
    """Three images (2, 1 and 0 boxes) with distinct hand-set logits in [-9, 3]."""
    head = method_head(model_cfg, QUICKSTART)
    boxes = [[[10.0, 12.0, 40.0, 38.0, 0], [60.0, 64.0, 76.0, 84.0, 3]],
             [[30.0, 20.0, 94.0, 70.0, 5]], []]
    gts = [InstanceData(bboxes=torch.tensor([b[:4] for b in image]).reshape(-1, 4),
                        labels=torch.tensor([int(b[4]) for b in image], dtype=torch.long))
           for image in boxes]
    metas = [dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                  batch_input_shape=(SIZE, SIZE), scale_factor=(1.0, 1.0))] * len(gts)
    sizes = [(SIZE // s, SIZE // s) for s in (8, 16, 32)]
    channels = head.num_base_priors * CLASSES
    total = sum(h * w for h, w in sizes) * channels * len(gts)
    values = -9 + 12 * torch.randperm(total, generator=torch.Generator().manual_seed(0)) / total
    cls_scores, start = [], 0
    for h, w in sizes:
        count = len(gts) * channels * h * w
        cls_scores.append(values[start:start + count].reshape(len(gts), channels, h, w).float())
        start += count
    bbox_preds = [torch.zeros(len(gts), head.num_base_priors * 4, h, w) for h, w in sizes]
    anchors, valid = head.get_anchors(sizes, metas, device='cpu')
    labels, label_weights = head.get_targets(anchors, valid, gts, metas)[:2]
    return AnchorBatch(cls_scores, bbox_preds, gts, metas, torch.cat(labels, 1),
                       torch.cat(label_weights, 1))


def _run(model_cfg, batch, methods: dict[str, Path]) -> EffectiveNegatives:
    effective = EffectiveNegatives({n: method_head(model_cfg, m) for n, m in methods.items()})
    effective.add(batch)
    return effective


def _split(batch):
    """logits (B, A, C) float64, one-hot targets, positive and negative anchor masks."""
    x = anchor_rows(batch.cls_scores, CLASSES).double()
    y = torch.nn.functional.one_hot(batch.labels, CLASSES + 1)[..., :CLASSES].double()
    valid = batch.label_weights > 0
    positive = valid & (batch.labels < CLASSES)
    return x, y, positive, valid & ~positive


def _ratio_of_formulas(batch, element_gradient) -> float:
    """E for a loss whose |d/dx| per element is ``element_gradient(p, y)`` (same normalizer
    as CE): sum over negatives of w / sum over positives, w = row sum over CE's row sum."""
    x, y, positive, negative = _split(batch)
    p = torch.sigmoid(x)
    w = element_gradient(p, y).sum(-1) / (p - y).abs().sum(-1)
    return float(w[negative].sum() / w[positive].sum())


def test_the_batch_has_what_the_closed_forms_need(batch):
    _, _, positive, negative = _split(batch)
    per_image = positive.sum(1).tolist()
    assert per_image[0] > 0 and per_image[1] > 0 and per_image[2] == 0
    assert (negative.sum(1) > 3 * positive.sum(1)).all()
    assert (batch.label_weights == 0).any()  # ignored anchors, left out everywhere


def test_plain_ce_gives_negatives_per_positive(tmp_path, model_cfg, batch):
    ce = _method(tmp_path, 'focal', 'model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, '
                 'alpha=None)))')
    result = _run(model_cfg, batch, {'ce': ce}).result()['ce']
    _, _, positive, negative = _split(batch)
    ratio = int(negative.sum()) / int(positive.sum())
    assert result['per_positive'] == pytest.approx(ratio, rel=1e-9)
    assert result['spread_per_positive'] == pytest.approx(ratio, rel=1e-9)


def test_hard_mining_keeps_the_three_highest_ce_negatives_per_positive(model_cfg, batch):
    effective = _run(model_cfg, batch, {'hard': NEGATIVES / 'retinanet_r18_quick_ce_hard1to3.py'})
    result = effective.result()['hard']
    assert result['per_positive'] == pytest.approx(3.0, rel=1e-12)
    assert result['spread_per_positive'] == pytest.approx(3.0, rel=1e-12)
    # Which negatives: per image the 3 P with the highest CE summed over the row.
    x, y, positive, negative = _split(batch)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction='none').sum(-1)
    for image in range(len(x)):
        budget = 3 * int(positive[image].sum())
        hardest = ce[image].masked_fill(~negative[image], -math.inf).topk(budget).indices
        expected = torch.zeros_like(negative[image])
        expected[hardest] = True
        head = effective.heads['hard']
        scores = [s.detach().double().requires_grad_() for s in batch.cls_scores]
        total = sum(head.loss_by_feat(scores, batch.bbox_preds, batch.gt_instances,
                                      batch.metas)['loss_cls'])
        gradient = anchor_rows(torch.autograd.grad(total, scores), CLASSES)[image]
        kept = (gradient.abs().sum(-1) > 0) & negative[image]
        assert torch.equal(kept, expected)


@pytest.mark.parametrize('temperature', [0.1, 1.0, 10.0, 100.0])
def test_soft_mining_spends_the_same_budget(tmp_path, model_cfg, batch, temperature):
    soft = _method(tmp_path, 'ce_hard1to3', "model = dict(train_cfg=dict(sampler=dict("
                   f"mode='soft', temperature={temperature})))")
    result = _run(model_cfg, batch, {'soft': soft}).result()['soft']
    # The weights sum to the budget, but for a far tail under 5e-4 of it left at 0.
    assert 3 * (1 - 5e-4) <= result['per_positive'] <= 3.0 + 1e-8
    _, _, positive, negative = _split(batch)
    assert 3.0 < result['spread_per_positive'] < int(negative.sum()) / int(positive.sum())


def test_soft_mining_spreads_wider_as_the_temperature_grows(tmp_path, model_cfg, batch):
    methods = {t: _method(tmp_path, 'ce_hard1to3', "model = dict(train_cfg=dict(sampler="
                          f"dict(mode='soft', temperature={t})))") for t in (0.1, 1.0, 10.0)}
    result = _run(model_cfg, batch, methods).result()
    spreads = [result[t]['spread_per_positive'] for t in (0.1, 1.0, 10.0)]
    assert spreads == sorted(spreads) and spreads[0] < spreads[-1] / 2


@pytest.mark.parametrize('temperature', [0.0, 1e-6])
def test_soft_mining_near_temperature_zero_is_hard_mining(tmp_path, model_cfg, batch,
                                                          temperature):
    # At temperature T the last rank of the budget passes about T K log 2 to the next.
    rel = 1e-12 if temperature == 0 else 1e-4
    soft = _method(tmp_path, 'ce_hard1to3', "model = dict(train_cfg=dict(sampler=dict("
                   f"mode='soft', temperature={temperature})))")
    effective = _run(model_cfg, batch, {
        'soft': soft, 'hard': NEGATIVES / 'retinanet_r18_quick_ce_hard1to3.py'})
    soft_sums, hard_sums = effective.sums['soft'], effective.sums['hard']
    assert soft_sums.negative == pytest.approx(hard_sums.negative, rel=rel)
    assert soft_sums.negative_squares == pytest.approx(hard_sums.negative_squares, rel=rel)
    assert soft_sums.positive == pytest.approx(hard_sums.positive, rel=1e-12)


def test_focal_loss_against_its_gradient_formula(model_cfg, batch):
    result = _run(model_cfg, batch, {'focal': NEGATIVES / 'retinanet_r18_quick_focal.py'})
    alpha, gamma = 0.25, 2.0

    def focal(p, y):  # |d FL / d x| for y = 1 and y = 0, written in p
        positive = alpha * (1 - p) ** gamma * ((1 - p) - gamma * p * torch.log(p))
        negative = (1 - alpha) * p ** gamma * (p - gamma * (1 - p) * torch.log1p(-p))
        return torch.where(y > 0, positive, negative)

    expected = _ratio_of_formulas(batch, focal)
    assert result.result()['focal']['per_positive'] == pytest.approx(expected, rel=1e-9)


def _images(batch: AnchorBatch, images: slice) -> AnchorBatch:
    return AnchorBatch([s[images] for s in batch.cls_scores],
                       [b[images] for b in batch.bbox_preds], batch.gt_instances[images],
                       batch.metas[images], batch.labels[images], batch.label_weights[images])


@pytest.mark.parametrize('first', [1, 2])
def test_batches_pool_anchor_by_anchor(model_cfg, batch, first):
    """Two batches pool to one batch's E. RetinaNet's focal loss divides each batch by its
    own normalizer, the positives with at least 1 per image: 3 and 1 (images 0-1, 2), or 2
    and 2 (images 0, 1-2: the image without objects counts 1)."""
    effective = EffectiveNegatives({'focal': method_head(
        model_cfg, NEGATIVES / 'retinanet_r18_quick_focal.py')})
    effective.add(_images(batch, slice(0, first)))
    effective.add(_images(batch, slice(first, 3)))
    one_batch = _run(model_cfg, batch, {'focal': NEGATIVES / 'retinanet_r18_quick_focal.py'})
    # mmdet divides by avg_factor + 1.2e-7 (float32 eps): 1e-7 apart between the batchings.
    assert effective.result()['focal']['per_positive'] == pytest.approx(
        one_batch.result()['focal']['per_positive'], rel=1e-6)


def test_alpha_balanced_ce_against_its_formula(model_cfg, batch):
    result = _run(model_cfg, batch, {'ce75': NEGATIVES / 'retinanet_r18_quick_ce_alpha75.py'})
    expected = _ratio_of_formulas(batch, lambda p, y: torch.where(y > 0, 0.75, 0.25)
                                  * (p - y).abs())
    assert result.result()['ce75']['per_positive'] == pytest.approx(expected, rel=1e-9)


def test_ghmc_against_a_plain_loop_over_levels_and_bins(model_cfg, batch):
    """mmdet's RetinaHead calls GHM-C once per level over the batch; one moving average of
    the bin counts (momentum .75) runs across the calls. A loop over elements' bins here."""
    result = _run(model_cfg, batch, {'ghmc': NEGATIVES / 'retinanet_r18_quick_ghmc.py'})
    bins, momentum = 30, 0.75
    x, y, positive, negative = _split(batch)
    valid = (positive | negative).unsqueeze(-1).expand_as(x)
    g = (torch.sigmoid(x) - y).abs()
    weight = torch.zeros_like(x)
    average = [0.0] * bins
    start = 0
    for h in (16, 8, 4):
        level = slice(start, start + 3 * h * h)
        start = level.stop
        g_level, valid_level = g[:, level], valid[:, level]
        index = (g_level * bins).floor().clamp(max=bins - 1).long()
        level_weight = torch.zeros_like(g_level)
        filled = 0
        for b in range(bins):
            members = (index == b) & valid_level
            if members.any():
                average[b] = momentum * average[b] + (1 - momentum) * int(members.sum())
                level_weight[members] = 1 / average[b]
                filled += 1
        weight[:, level] = level_weight / filled
    w = (weight * g).sum(-1) / g.sum(-1)
    expected = float(w[negative].sum() / w[positive].sum())
    # GHMC keeps its moving average in float32.
    assert result.result()['ghmc']['per_positive'] == pytest.approx(expected, rel=1e-6)


def test_dr_loss_ranks_each_image_over_all_levels(model_cfg, batch):
    result = _run(model_cfg, batch, {'dr': NEGATIVES / 'retinanet_r18_quick_dr_loss.py'})
    x, _, positive, negative = _split(batch)
    x = x.requires_grad_()
    (gradient,) = torch.autograd.grad(dr_loss(x, batch.labels, batch.label_weights), x)
    p, y = torch.sigmoid(x.detach()), torch.nn.functional.one_hot(
        batch.labels, CLASSES + 1)[..., :CLASSES]
    w = gradient.abs().sum(-1) / (p - y).abs().sum(-1)
    expected = float(w[negative].sum() / w[positive].sum())
    assert result.result()['dr']['per_positive'] == pytest.approx(expected, rel=1e-9)


def test_weight_sums_by_hand():
    sums = WeightSums()
    labels = torch.tensor([[0, 6, 6, 6, 2]])
    sums.add(torch.tensor([[1.0, 0.5, 0.5, 9.0, 2.0]]), labels,
             torch.tensor([[1.0, 1.0, 1.0, 0.0, 1.0]]), num_classes=6)
    assert sums.per_positive() == pytest.approx(1.0 / 3.0)
    # Kish sizes: negatives 1^2 / 0.5 = 2, positives 3^2 / 5 = 1.8
    assert sums.spread_per_positive() == pytest.approx(2 / 1.8)


def test_plot_tool_on_hand_made_records(tmp_path):
    runs = [dict(name=f'retinanet_r18_quick_{n}', seed=s, AP=ap)
            for n, aps in (('ce_hard1to3', (.30, .32, .31)), ('focal', (.40, .41, .39)),
                           ('ce_soft_t10', (.33, .35, .34)))
            for s, ap in enumerate(aps)]
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(dict(runs=runs)))
    points = []
    for name, value, spread in (('ce_hard1to3', 3.0, 3.0), ('focal', 0.2, 220.0),
                                ('ce_soft_t10', 2.999, 60.0)):
        path = tmp_path / name / 'imbalance.json'
        path.parent.mkdir()
        path.write_text(json.dumps(dict(effective_negatives={
            f'retinanet_r18_quick_{name}': dict(per_positive=value,
                                                spread_per_positive=spread)})))
        points += ['--point', f'retinanet_r18_quick_{name}', str(path)]
    out = tmp_path / 'figure.png'
    run = subprocess.run([sys.executable, 'tools/plot_effective_negatives.py', '--results',
                          str(results), *points, '--out', str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.stat().st_size > 10_000
    table = json.loads(out.with_suffix('.json').read_text())
    focal = table['points']['retinanet_r18_quick_focal']
    assert focal['x'] == 0.2 and focal['seeds'] == [0, 1, 2]
    assert focal['ap_mean'] == pytest.approx(0.40)
    assert focal['ap_std'] == pytest.approx(0.01)
