"""The imbalance analysis against hand computations: the focal-loss terms against autograd in
float64, the shares against sums written out here, and the tool end to end on a model whose
scores are all set by hand (anchor counts checked by a plain per-image IoU loop)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plugin.repro.imbalance import (SignedLogits, focal_terms, imbalance_stats,
                                    normalized_loss_cdf)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = 'configs/quickstart/retinanet_r18_quickstart.py'


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
def test_focal_terms_match_the_formula_and_autograd(gamma):
    x = torch.linspace(-12, 12, 97, dtype=torch.float64, requires_grad=True)
    for y in (0.0, 1.0):
        p = torch.sigmoid(x)
        pt = p * y + (1 - p) * (1 - y)
        loss = -((1 - pt) ** gamma) * torch.log(pt)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        signed = x.detach() if y else -x.detach()
        got_loss, got_grad = focal_terms(signed.float(), gamma)
        torch.testing.assert_close(got_loss, loss.detach(), rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(got_grad, grad.abs(), rtol=1e-6, atol=1e-12)


def _fl(z: float, gamma: float) -> tuple[float, float]:
    """Focal loss of one example with signed logit z, and |d loss / d logit|, by hand."""
    pt = 1 / (1 + math.exp(-z))
    return -(1 - pt) ** gamma * math.log(pt), (1 - pt) ** gamma * (1 - pt - gamma * pt *
                                                                    math.log(pt))


def test_shares_are_the_hand_sums():
    pos = [-1.0, 2.0]  # one hard, one easy positive
    neg = [3.0, 0.5, -0.2, -2.0]  # two easy, two hard negatives
    sample = SignedLogits(torch.tensor(pos), torch.tensor(neg), positive_anchors=[2],
                          negative_anchors=[1], negative_examples=[4])
    stats = imbalance_stats(sample, gammas=[0.0, 2.0], alpha=0.25)
    assert stats['negatives_per_positive'] == 0.5
    assert stats['easy_negative_example_share'] == 0.5
    for gamma in (0.0, 2.0):
        for index, what in enumerate(('loss', 'gradient')):
            p = sum(0.25 * _fl(z, gamma)[index] for z in pos)
            n = [0.75 * _fl(z, gamma)[index] for z in neg]
            shares = stats['per_gamma'][str(gamma)]
            assert shares[f'{what}_share_negatives'] == pytest.approx(sum(n) / (p + sum(n)))
            assert shares[f'{what}_share_easy_negatives'] == pytest.approx(
                (n[0] + n[1]) / (p + sum(n)))


def test_normalized_loss_cdf_sorts_and_normalizes():
    fraction, share = normalized_loss_cdf(torch.tensor([3.0, -1.0, 0.0]), 0.0)
    losses = sorted(_fl(z, 0.0)[0] for z in (3.0, -1.0, 0.0))
    expected = [sum(losses[:k]) / sum(losses) for k in (1, 2, 3)]
    assert fraction.tolist() == pytest.approx([1 / 3, 2 / 3, 1])
    assert share.tolist() == pytest.approx(expected)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[:, 2:] - a[:, :2]).prod(-1)[:, None] + (b[:, 2:] - b[:, :2]).prod(-1)[None]
    return inter / (area - inter)


def _hand_counts(data: Path, anchors: torch.Tensor) -> tuple[int, int]:
    """Positive and negative anchors over the val split by RetinaNet's rule (IoU >= .5
    positive, < .4 negative, each box's best anchors positive), image by image."""
    coco = json.loads((data / 'annotations' / 'instances_val.json').read_text())
    pos = neg = 0
    for image in coco['images']:
        boxes = torch.tensor([[x, y, x + w, y + h] for a in coco['annotations']
                              if a['image_id'] == image['id'] for x, y, w, h in [a['bbox']]],
                             dtype=torch.float32).reshape(-1, 4)
        if len(boxes) == 0:
            neg += len(anchors)
            continue
        iou = _iou(anchors, boxes)
        best = iou.max(1).values
        positive = best >= 0.5
        for column in iou.T:  # every box keeps its best anchors (all ties)
            positive |= column == column.max()
        pos += int(positive.sum())
        neg += int(((best < 0.4) & ~positive).sum())
    return pos, neg


def test_tool_on_hand_set_scores(tmp_path):
    from mmdet.registry import MODELS
    from mmengine.config import Config

    from plugin.data.synthetic import generate

    data = tmp_path / 'data'
    generate(data, num_train=4, num_val=6)
    cfg = Config.fromfile(ROOT / QUICKSTART)
    model = MODELS.build(cfg.model)
    bias = -3.0  # every logit: negatives easy (p_t .95), positives hard (p_t .05)
    torch.nn.init.zeros_(model.bbox_head.retina_cls.weight)
    torch.nn.init.constant_(model.bbox_head.retina_cls.bias, bias)
    checkpoint = tmp_path / 'hand.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)

    out = tmp_path / 'out'
    run = subprocess.run(
        [sys.executable, 'tools/analyze_imbalance.py', QUICKSTART, str(checkpoint),
         '--gammas', '0', '2', '--out', str(out), '--methods',
         *(f'configs/negatives/retinanet_r18_quick_{m}.py' for m in ('ce_hard1to3',
                                                                    'ce_alpha75')),
         '--cfg-options', f'val_dataloader.dataset.data_root={data}/'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads((out / 'imbalance.json').read_text())
    assert (out / 'figure4.png').stat().st_size > 10_000
    # a record another machine can rerun: the code that made it, paths from the repository
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    assert stats['commit'].split('+')[0] == head
    assert stats['config'] == QUICKSTART and stats['checkpoint'] == str(checkpoint)
    assert stats['command'].startswith(f'python tools/analyze_imbalance.py {QUICKSTART} ')
    assert all(v['config'].startswith('configs/negatives/')
               for v in stats['effective_negatives'].values())

    anchors = torch.cat(model.bbox_head.prior_generator.grid_priors(
        [(16, 16), (8, 8), (4, 4)], device='cpu'))
    pos, neg = _hand_counts(data, anchors)
    assert stats['images'] == 6
    assert stats['positive_anchors_per_image'] == pytest.approx(pos / 6)
    assert stats['negative_anchors_per_image'] == pytest.approx(neg / 6)
    classes = 6
    neg_examples = (pos + neg) * classes - pos
    for gamma in (0.0, 2.0):
        for index, what in enumerate(('loss', 'gradient')):
            p, n = pos * _fl(bias, gamma)[index], neg_examples * _fl(-bias, gamma)[index]
            shares = stats['per_gamma'][str(gamma)]
            assert shares[f'{what}_share_negatives'] == pytest.approx(n / (p + n), rel=1e-5)
            assert shares[f'{what}_share_easy_negatives'] == pytest.approx(n / (p + n),
                                                                           rel=1e-5)
    # Effective negatives per positive: hard 1:3 mining keeps 3 per positive; alpha-balanced
    # CE weighs a negative anchor .25 and a positive one by its row's alpha over CE's.
    effective = stats['effective_negatives']
    assert effective['retinanet_r18_quick_ce_hard1to3']['per_positive'] == pytest.approx(3.0)
    p = 1 / (1 + math.exp(-bias))
    positive_row = (0.75 * (1 - p) + 0.25 * (classes - 1) * p) / ((1 - p) + (classes - 1) * p)
    assert effective['retinanet_r18_quick_ce_alpha75']['per_positive'] == pytest.approx(
        neg * 0.25 / (pos * positive_row), rel=1e-6)


def test_record_paths_read_the_same_on_another_machine(tmp_path):
    from plugin.repro.records import portable_path

    assert portable_path(ROOT / QUICKSTART, ROOT) == QUICKSTART
    run_file = tmp_path / 'out' / 'quick' / 'runs' / 'fl' / '600it' / 'seed0' / 'iter_600.pth'
    assert portable_path(run_file, ROOT) == 'OUT/quick/runs/fl/600it/seed0/iter_600.pth'
    assert portable_path(Path.home() / 'elsewhere' / 'a.py', ROOT) == '~/elsewhere/a.py'
    assert portable_path('/opt/x.py', ROOT) == '/opt/x.py'
