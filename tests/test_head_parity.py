"""The "no mining" path of the heads, with positives: ``MiningRetinaHead`` with a
``PseudoSampler`` against mmdet's ``RetinaHead`` with mmdet's ``FocalLoss`` over two optimizer
steps, and ``MiningSSDHead`` with ``SigmoidFocalLoss`` (configs/ssd/ssd300_coco_focal.py)
against a float64 loop over images."""
import copy

import torch
from helpers import img_metas, mmdet_config, random_gt
from mmdet.registry import MODELS
from test_mining_heads import NUM_CLASSES, _head, _problem, _run_head, _smooth_l1

import plugin  # noqa: F401
import reference as ref

SIZE = 128
LEVEL_SIZES = [SIZE // stride for stride in (8, 16, 32, 64, 128)]
# Step 1: every image has objects; step 2: one image without any.
BOXES_PER_STEP = ((3, 5), (4, 0))


def retina_heads(plugin_loss=None):
    """mmdet's RetinaHead (mmdet's FocalLoss) and MiningRetinaHead (the plugin's
    SigmoidFocalLoss, PseudoSampler), small, with the same weights."""
    cfg = mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py')
    stock = copy.deepcopy(cfg.model.bbox_head)
    stock.update(num_classes=NUM_CLASSES, in_channels=8, feat_channels=8, stacked_convs=1,
                 train_cfg=copy.deepcopy(cfg.model.train_cfg), test_cfg=cfg.model.test_cfg)
    ours = copy.deepcopy(stock)
    ours.update(type='MiningRetinaHead', loss_cls=plugin_loss or dict(
        type='SigmoidFocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0))
    torch.manual_seed(0)
    stock_head = MODELS.build(stock)
    stock_head.init_weights()
    ours_head = MODELS.build(ours)
    ours_head.load_state_dict(stock_head.state_dict())
    return stock_head, ours_head


def retina_step_inputs(step):
    """Features (B, 8, H, W) per level, ground truths and metas of one step."""
    g = torch.Generator().manual_seed(100 + step)
    boxes = BOXES_PER_STEP[step]
    feats = [torch.randn(len(boxes), 8, size, size, generator=g) for size in LEVEL_SIZES]
    gts = [random_gt(n, NUM_CLASSES, SIZE, g) for n in boxes]
    return feats, gts, img_metas(len(boxes), SIZE)


def _positives(head, gts, metas):
    featmap_sizes = [torch.Size([size, size]) for size in LEVEL_SIZES]
    anchors, valid = head.get_anchors(featmap_sizes, metas, device='cpu')
    labels = head.get_targets(anchors, valid, gts, metas)[0]
    return int(sum((level < NUM_CLASSES).sum() for level in labels))


def test_mining_retina_head_with_pseudo_sampler_equals_mmdet_retina_head_over_two_steps():
    stock, ours = retina_heads()
    optimizers = [torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
                  for head in (stock, ours)]
    for step in range(2):
        feats, gts, metas = retina_step_inputs(step)
        assert _positives(stock, gts, metas) >= 5, 'the problem must have positives'
        results = []
        for head, optimizer in zip((stock, ours), optimizers):
            optimizer.zero_grad()
            losses = head.loss_by_feat(*head(feats), gts, metas)
            sum(map(sum, losses.values())).backward()
            results.append((losses, {name: p.grad.clone() for name, p in head.named_parameters()}))
            optimizer.step()
        (their_losses, their_grads), (our_losses, our_grads) = results
        for key in ('loss_cls', 'loss_bbox'):  # RetinaHead's structure: one loss per level
            assert len(our_losses[key]) == len(their_losses[key]) == len(LEVEL_SIZES)
            torch.testing.assert_close(torch.stack(our_losses[key]),
                                       torch.stack(their_losses[key]), rtol=2e-5, atol=1e-8)
        assert float(sum(their_losses['loss_bbox']).detach()) > 0, 'no positive reached the box'
        for name, grad in their_grads.items():
            torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    # After two steps from the same weights, the same weights.
    for (name, theirs), mine in zip(stock.named_parameters(), ours.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-7, msg=name)


def _ssd_focal_reference(problem, alpha=0.25, gamma=2.0):
    """Per-image losses of SigmoidFocalLoss on every anchor (label weights applied) and
    smooth L1 on the positives, over the assigned positives (at least 1), float64, with the
    gradients of their sum with respect to the scores and box deltas."""
    num_images = problem['labels'].shape[0]
    normalizer = max(problem['avg_factor'], 1.0)
    scores = problem['cls_score'].detach().double().requires_grad_()
    deltas = problem['bbox_pred'].detach().double().requires_grad_()
    cls_losses, box_losses = [], []
    for b in range(num_images):
        targets = ref.one_hot(problem['labels'][b], NUM_CLASSES)
        focal = ref.sigmoid_focal(scores[b], targets, alpha, gamma).sum(1)
        cls_losses.append((focal * problem['label_weights'][b].double()).sum() / normalizer)
        box = _smooth_l1(deltas[b], problem['bbox_targets'][b].double())
        box_losses.append((box * problem['bbox_weights'][b].double()).sum() / normalizer)
    grads = torch.autograd.grad(sum(cls_losses) + sum(box_losses), (scores, deltas))
    return torch.stack(cls_losses).detach(), torch.stack(box_losses).detach(), grads


def test_mining_ssd_head_with_sigmoid_focal_loss_equals_a_per_image_loop():
    head = _head('ssd', dict(type='PseudoSampler'),
                 loss_cls=dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25))
    assert head.cls_out_channels == NUM_CLASSES  # sigmoid: no background output
    problem = _problem(num_images=3, seed=5, classes=NUM_CLASSES)
    assert problem['avg_factor'] > 10  # positives in the images that have objects
    losses, avg_factor = _run_head(head, problem)
    assert avg_factor == problem['avg_factor']
    expected_cls, expected_box, (grad_cls, grad_box) = _ssd_focal_reference(problem)
    assert len(losses['loss_cls']) == len(losses['loss_bbox']) == 3  # SSDHead's: per image
    torch.testing.assert_close(torch.stack(losses['loss_cls']).double(), expected_cls,
                               rtol=2e-5, atol=1e-12)
    torch.testing.assert_close(torch.stack(losses['loss_bbox']).double(), expected_box,
                               rtol=2e-5, atol=1e-12)
    sum(losses['loss_cls']).add(sum(losses['loss_bbox'])).backward()
    torch.testing.assert_close(problem['cls_score'].grad.double(), grad_cls, rtol=1e-4,
                               atol=1e-9)
    torch.testing.assert_close(problem['bbox_pred'].grad.double(), grad_box, rtol=1e-4,
                               atol=1e-9)

