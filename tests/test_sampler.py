"""HardNegativeSampler and the mining heads: brute-force references and mmdet parity."""
import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import det_batch, img_metas, mmdet_config, random_gt
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import bbox_overlaps

import plugin  # noqa: F401
from plugin.ops import RowGather, hard_negative_mask, ohem_mask


def _random_mining_problem(seed, num_images=4, num_anchors=300):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(num_images, num_anchors, generator=g)
    positive = torch.rand(num_images, num_anchors, generator=g) < 0.03
    positive[1] = False  # an image without objects
    ignored = (torch.rand(num_images, num_anchors, generator=g) < 0.2) & ~positive
    ignored[2, :] = ~positive[2]  # an image whose negatives are nearly all ignored
    ignored[2, :5] = False
    return losses, positive, ~positive & ~ignored


@pytest.mark.parametrize('ratio,min_neg,num_anchors', [(3, 0, 300), (3, 10, 300), (1.5, 0, 300),
                                                     (7, 4, 300), (3, 0, 517)])
@pytest.mark.parametrize('mode', ['eager', 'compiled'])
def test_hard_negatives_are_the_top_by_loss(ratio, min_neg, num_anchors, mode, request):
    if mode == 'compiled':
        request.getfixturevalue('compiled')
    losses, positive, negative = _random_mining_problem(int(ratio * 10 + min_neg), 4,
                                                        num_anchors)
    selected = hard_negative_mask(losses, positive, negative, ratio, min_neg)
    for b in range(losses.shape[0]):
        num_pos, candidates = int(positive[b].sum()), negative[b].nonzero().flatten().tolist()
        wanted = max(int(ratio * num_pos), min_neg)
        expected_count = min(wanted, len(candidates))
        brute = sorted(candidates, key=lambda i: -float(losses[b, i]))[:expected_count]
        assert selected[b].nonzero().flatten().tolist() == sorted(brute)
        assert not (selected[b] & ~negative[b]).any()  # never ignored, never positive
    assert selected[1].sum() == min_neg  # no positives: the minimum


def _sequential_nms(boxes, order, thr):
    overlaps = bbox_overlaps(boxes, boxes).tolist()  # mmdet's IoU, not the code under test
    kept = []
    for i in order:
        if all(overlaps[i][j] <= thr for j in kept):
            kept.append(i)
    return kept


# 120 anchors: two NMS blocks. 1500: many blocks, and the selection reads on past the first
# (to the cap of positives, or until no positive is left beyond it, with 1 % positives; or
# for want of negatives, with 90 %).
@pytest.mark.parametrize('num_anchors,positive_rate,batch_size,nms_thr,ratio', [
    (120, 0.15, 16, 0.5, None), (120, 0.15, 32, 0.7, None), (120, 0.15, 16, 0.5, 3.0),
    (1500, 0.15, 256, 0.5, None), (1500, 0.15, 128, 0.5, 3.0), (1500, 0.01, 128, 0.5, 3.0),
    (1500, 0.9, 128, 0.3, 3.0)])
def test_ohem_matches_sequential_greedy_nms(num_anchors, positive_rate, batch_size, nms_thr,
                                            ratio):
    g = torch.Generator().manual_seed(batch_size)
    num_images, side = 3, 60 * (num_anchors / 120) ** 0.5
    xy = torch.rand(num_images, num_anchors, 2, generator=g) * side
    boxes = torch.cat([xy, xy + 10 + torch.rand(num_images, num_anchors, 2, generator=g) * 20], 2)
    losses = torch.rand(num_images, num_anchors, generator=g)
    positive = torch.rand(num_images, num_anchors, generator=g) < positive_rate
    candidate = torch.rand(num_images, num_anchors, generator=g) < 0.9
    positive &= candidate
    kept = ohem_mask(losses, boxes, positive, candidate, batch_size, nms_thr, ratio)
    for b in range(num_images):
        order = [i for i in losses[b].argsort(descending=True).tolist() if candidate[b, i]]
        survivors = _sequential_nms(boxes[b], order, nms_thr)
        if ratio is None:
            expected = survivors[:batch_size]
        else:
            pos = [i for i in survivors if positive[b, i]][:-(-batch_size // (1 + int(ratio)))]
            neg_budget = min(int(ratio * len(pos)), batch_size - len(pos))
            expected = pos + [i for i in survivors if not positive[b, i]][:neg_budget]
        assert sorted(kept[b].nonzero().flatten().tolist()) == sorted(expected)
        chosen = boxes[b][kept[b]]
        iou = bbox_overlaps(chosen, chosen).fill_diagonal_(0)
        assert (iou <= nms_thr).all()


@pytest.mark.parametrize('cfg,match', [
    (dict(neg_pos_ratio=0), 'neg_pos_ratio=0'),
    (dict(neg_pos_ratio=-1.0), 'neg_pos_ratio=-1.0'),
    (dict(neg_pos_ratio=None), 'neg_pos_ratio=None'),
    (dict(mode='ohem', batch_size=0), 'batch_size=0'),
    (dict(mode='ohem', nms_thr=0.0), r'nms_thr=0.0; allowed: \(0, 1\]'),
    (dict(mode='ohem', nms_thr=1.5), 'nms_thr=1.5'),
    (dict(min_neg_per_image=-2), 'min_neg_per_image=-2'),
    (dict(mode='random'), "mode='random'"),
])
def test_bad_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        TASK_UTILS.build(dict(type='HardNegativeSampler', **cfg))


def _ssd_head_cfgs():
    cfg = mmdet_config('ssd/ssd300_coco.py')
    stock = copy.deepcopy(cfg.model.bbox_head)
    stock.update(train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    mining = copy.deepcopy(stock)
    mining.type = 'MiningSSDHead'
    mining.train_cfg = copy.deepcopy(stock.train_cfg)
    mining.train_cfg.sampler = dict(type='HardNegativeSampler', neg_pos_ratio=3)
    return stock, mining


@pytest.mark.parametrize('stock_head,plugin_head,base', [
    ('SSDHead', 'MiningSSDHead', 'ssd/ssd300_coco.py'),
    ('RetinaHead', 'MiningRetinaHead', 'retinanet/retinanet_r50_fpn_1x_coco.py')])
def test_stock_head_without_scores_fails_at_build_naming_the_plugin_head(stock_head, plugin_head,
                                                                           base):
    cfg = mmdet_config(base)
    head = copy.deepcopy(cfg.model.bbox_head)
    head.update(train_cfg=copy.deepcopy(cfg.model.train_cfg))
    head.train_cfg.sampler = dict(type='HardNegativeSampler')
    with pytest.raises(TypeError, match=f"{stock_head} hands its sampler no scores.*{plugin_head}"):
        MODELS.build(head)


@pytest.mark.parametrize('loss_cls,mode', [(None, 'eager'), (None, 'compiled'),
                                           (dict(type='CrossEntropyLoss', use_sigmoid=False),
                                            'eager')],
                         ids=['default-fused-ce', 'default-fused-ce-compiled', 'mmdet-ce'])
def test_ssd_losses_and_gradients_equal_mmdet_ssdhead(loss_cls, mode, request):
    if mode == 'compiled':
        request.getfixturevalue('compiled')
    stock_cfg, mining_cfg = _ssd_head_cfgs()
    if loss_cls is not None:
        mining_cfg.loss_cls = loss_cls
    torch.manual_seed(0)
    stock = MODELS.build(stock_cfg)
    mining = MODELS.build(mining_cfg)
    mining.load_state_dict(stock.state_dict())
    num_images = 4
    metas = img_metas(num_images, 300)
    g = torch.Generator().manual_seed(1)
    for num_gts in ((3, 0, 7, 1), (1, 4, 0, 2)):  # the second step recycles gradient buffers
        feats = [torch.randn(num_images, c, s, s, requires_grad=True)
                 for c, s in zip(stock_cfg.in_channels, [38, 19, 10, 5, 3, 1])]
        gts = [random_gt(n, generator=g) for n in num_gts]
        theirs = stock.loss_by_feat(*stock(feats), gts, metas)
        their_grads = torch.autograd.grad(sum(map(sum, theirs.values())), feats)
        ours = mining.loss_by_feat(*mining(feats), gts, metas)
        our_grads = torch.autograd.grad(sum(map(sum, ours.values())), feats)
        for key in ('loss_cls', 'loss_bbox'):  # mmdet's structure: one loss per image
            assert len(ours[key]) == len(theirs[key]) == num_images
            torch.testing.assert_close(torch.stack(ours[key]),
                                       torch.stack(theirs[key]).reshape(-1), rtol=1e-6, atol=0)
        for our_grad, their_grad in zip(our_grads, their_grads):
            torch.testing.assert_close(our_grad, their_grad, rtol=1e-5, atol=1e-7)


def test_min_negatives_teach_background_in_images_without_objects():
    _, mining_cfg = _ssd_head_cfgs()
    mining_cfg.train_cfg.sampler.min_neg_per_image = 16
    head = MODELS.build(mining_cfg)
    feats = [torch.randn(2, c, s, s) for c, s in zip(mining_cfg.in_channels,
                                                     [38, 19, 10, 5, 3, 1])]
    gts = [random_gt(0), random_gt(0)]
    loss = head.loss_by_feat(*head(feats), gts, img_metas(2, 300))['loss_cls']
    # 16 hardest background anchors per image, normalized by 1 per image
    scores = torch.cat([s.permute(0, 2, 3, 1).reshape(2, -1, 81) for s in head(feats)[0]], 1)
    ce = F.cross_entropy(scores.flatten(0, 1), torch.full((scores.shape[0] * scores.shape[1],), 80),
                         reduction='none').reshape(2, -1)
    expected = ce.topk(16, dim=1).values.sum(1) / 2  # one loss per image, as SSDHead's
    torch.testing.assert_close(torch.stack(loss), expected, rtol=1e-5, atol=0)


def _train_step_and_predict(cfg, boxes_per_image, size):
    cfg.model.test_cfg.score_thr = 0.0  # untrained scores sit at the prior (~0.01)
    model = MODELS.build(cfg.model)
    model.init_weights()  # SSD's L2Norm scale is uninitialized memory until then
    batch = model.data_preprocessor(det_batch(boxes_per_image, size), training=True)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(v if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
    total.backward()
    assert torch.isfinite(total) and set(losses) == {'loss_cls', 'loss_bbox'}
    model.eval()
    with torch.no_grad():
        results = model.test_step(det_batch(boxes_per_image, size, seed=1))
    assert len(results) == len(boxes_per_image)
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and pred.scores.shape == pred.labels.shape
    assert pred.labels.dtype == torch.long and len(pred) > 0
    return model


def test_retinanet_cross_entropy_with_mining_trains_and_predicts():
    cfg = mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.type = 'MiningRetinaHead'
    cfg.model.bbox_head.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=True,
                                        loss_weight=1.0)
    cfg.model.train_cfg.sampler = dict(type='HardNegativeSampler', neg_pos_ratio=3)
    _train_step_and_predict(cfg, [4, 0], 128)


def test_retinanet_ohem_trains_and_predicts():
    cfg = mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.type = 'MiningRetinaHead'
    cfg.model.bbox_head.loss_cls = dict(type='CrossEntropyLoss', use_sigmoid=True)
    cfg.model.train_cfg.sampler = dict(type='HardNegativeSampler', mode='ohem', batch_size=128,
                                       nms_thr=0.7, neg_pos_ratio=None)
    _train_step_and_predict(cfg, [4, 1], 128)


def test_ssd300_with_sampler_trains_and_predicts():
    cfg = mmdet_config('ssd/ssd300_coco.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.type = 'MiningSSDHead'
    cfg.model.train_cfg.sampler = dict(type='HardNegativeSampler', neg_pos_ratio=3,
                                       min_neg_per_image=8)
    _train_step_and_predict(cfg, [3, 0], 300)


def _gather_step(gather, x, rows, weights):
    (gather(x, rows) * weights).sum().backward()
    return x.grad


def test_row_gather_gradient_equals_indexing_while_recycling_its_buffer():
    gather = RowGather()
    x = torch.randn(50, 7, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    pointers = []
    for size in (9, 4, 9, 0, 12):  # each step zeroes the rows of the one before
        rows = torch.randperm(50, generator=g)[:size]
        weights = torch.randn(size, 7, generator=g)
        ours = _gather_step(gather, x, rows, weights).clone()
        pointers.append(x.grad.data_ptr())
        x.grad = None
        (expected,) = torch.autograd.grad((x[rows] * weights).sum(), x)
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    assert len(set(pointers)) == 1, 'a buffer nobody held was not reused'


def test_row_gather_never_reuses_a_gradient_someone_holds_or_changed():
    gather = RowGather()
    x = torch.randn(30, 3, requires_grad=True)
    rows1, rows2 = torch.tensor([1, 5, 7]), torch.tensor([2, 5])
    w1, w2 = torch.randn(3, 3), torch.randn(2, 3)
    # x.grad kept: the second backward accumulates into it, from a buffer of its own.
    _gather_step(gather, x, rows1, w1)
    accumulated = _gather_step(gather, x, rows2, w2)
    expected = torch.zeros(30, 3)
    expected.index_add_(0, rows1, w1).index_add_(0, rows2, w2)
    torch.testing.assert_close(accumulated, expected, rtol=0, atol=0)
    # Changed in place, then released: its stale values must not leak into the next step.
    x.grad = None
    _gather_step(gather, x, rows1, w1).add_(1.0)
    x.grad = None
    ours = _gather_step(gather, x, rows2, w2)
    torch.testing.assert_close(ours, torch.zeros(30, 3).index_copy_(0, rows2, w2), rtol=0,
                               atol=0)
    # Another shape: a fresh buffer.
    y = torch.randn(31, 3, requires_grad=True)
    torch.testing.assert_close(_gather_step(gather, y, rows2, w2),
                               torch.zeros(31, 3).index_copy_(0, rows2, w2), rtol=0, atol=0)
