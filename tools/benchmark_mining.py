"""Hard negative mining + loss, forward + backward, against mmdet's SSDHead per-image mining.

    python tools/benchmark_mining.py [--images 32]

SSD300 (8732 anchors, 81 outputs) on the same targets: mmdet's ``SSDHead.loss_by_feat_single``
over each image (its loop), against ``MiningSSDHead.loss_by_batch`` with
``HardNegativeSampler(neg_pos_ratio=3)`` over the batch. Then RetinaNet size (2 x 100k
anchors x 80 classes): sigmoid cross entropy + mining against focal loss on every anchor.
Soft mining (``mode='soft'``, temperature 1) is timed beside hard mining at both sizes.
Target assignment is shared by both paths and left out of the timing. The last row writes a
fresh, zero-filled dense gradient of the scores, as mmdet's path does every step; the plugin's
gather recycles its gradient buffer instead, re-zeroing only the rows it wrote, and that held
buffer is counted in the plugin's peak memory.
"""
import argparse
import copy
import dataclasses
import os

import mmdet
import torch
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import plugin  # noqa: F401
from _bench import ensure_malloc_returns_memory, measure_all, print_table


HARD = dict(type='HardNegativeSampler', neg_pos_ratio=3)
SOFT = dict(type='HardNegativeSampler', neg_pos_ratio=3, mode='soft', temperature=1.0)


def _ssd_heads(sampler):
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                                       'ssd', 'ssd300_coco.py'))
    stock = copy.deepcopy(cfg.model.bbox_head)
    stock.update(train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    mining = copy.deepcopy(stock)
    mining.update(type='MiningSSDHead', train_cfg=copy.deepcopy(stock.train_cfg))
    mining.train_cfg.sampler = sampler
    return MODELS.build(stock), MODELS.build(mining)


def _retina_mining_head(sampler):
    """MiningRetinaHead with sigmoid cross entropy and 1:3 mining by ``sampler``."""
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                                       'retinanet', 'retinanet_r50_fpn_1x_coco.py'))
    head = copy.deepcopy(cfg.model.bbox_head)
    head.update(type='MiningRetinaHead', train_cfg=copy.deepcopy(cfg.model.train_cfg),
                loss_cls=dict(type='SigmoidFocalLoss', gamma=0.0, alpha=None))
    head.train_cfg.sampler = sampler
    return MODELS.build(head)


def _with_held_buffers(row, head):
    """The measurement with the gradient buffers the head keeps between steps added to its
    peak memory (they exist before the measured call, so RSS growth misses them)."""
    held = sum(gather.held_bytes for gather in head._row_gathers.values()) / 2**20
    return dataclasses.replace(row, name=f'{row.name} (incl. {held:.0f} MiB held buffers)',
                               peak_mib=row.peak_mib + held)


def _ssd_targets(head, num_images):
    g = torch.Generator().manual_seed(0)
    sizes = [38, 19, 10, 5, 3, 1]
    metas = [dict(img_shape=(300, 300), pad_shape=(300, 300)) for _ in range(num_images)]
    gts = []
    for _ in range(num_images):
        n = int(torch.randint(0, 8, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 200
        wh = 20 + torch.rand(n, 2, generator=g) * 80
        gts.append(InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                labels=torch.randint(0, 80, (n,), generator=g)))
    anchors, valid = head.get_anchors([torch.Size([s, s]) for s in sizes], metas, device='cpu')
    labels, label_weights, bbox_targets, bbox_weights, avg_factor = head.get_targets(
        anchors, valid, gts, metas)
    anchors = torch.stack([torch.cat(a) for a in anchors])
    num_anchors = anchors.shape[1]
    cls_score = torch.randn(num_images, num_anchors, 81, generator=g)
    bbox_pred = torch.randn(num_images, num_anchors, 4, generator=g) * 0.1
    return (cls_score, bbox_pred, anchors, torch.cat(labels, 1), torch.cat(label_weights, 1),
            torch.cat(bbox_targets, 1), torch.cat(bbox_weights, 1), avg_factor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=32, help='SSD300 batch size')
    parser.add_argument('--retina-anchors', type=int, default=100_000)
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()
    ensure_malloc_returns_memory()
    stock, mining = _ssd_heads(HARD)
    soft_mining = _ssd_heads(SOFT)[1]
    cls_score, bbox_pred, anchors, labels, label_weights, bbox_targets, bbox_weights, avg = \
        _ssd_targets(stock, args.images)

    # The scores are leaves (no copy per step); each step frees the gradients it made.
    cls, box = cls_score.requires_grad_(), bbox_pred.requires_grad_()

    def stock_step():
        losses_cls, losses_bbox = multi_apply(stock.loss_by_feat_single, cls, box, anchors,
                                              labels, label_weights, bbox_targets,
                                              bbox_weights, avg_factor=avg)
        (sum(losses_cls) + sum(losses_bbox)).sum().backward()
        cls.grad = box.grad = None

    def plugin_step(head):
        losses = head.loss_by_batch(cls, box, anchors, labels, label_weights, bbox_targets,
                                    bbox_weights, avg)
        (sum(losses['loss_cls']) + sum(losses['loss_bbox'])).backward()
        cls.grad = box.grad = None

    rows = measure_all({'mmdet SSDHead (per-image mining)': stock_step,
                        'plugin MiningSSDHead + HardNegativeSampler': lambda: plugin_step(mining),
                        'fresh dense score gradient (zeros_like)': lambda: torch.zeros_like(cls)},
                       args.repeats)
    rows[1] = _with_held_buffers(rows[1], mining)
    print_table(f'SSD300 mining + losses, forward + backward, batch {args.images} x '
                f'{anchors.shape[1]} anchors, {torch.get_num_threads()} threads', rows,
                baseline='mmdet SSDHead (per-image mining)', extra={
                    'plugin vs a fresh dense gradient (time)':
                        f'{rows[1].seconds / rows[2].seconds:.2f}x'})
    # Soft against hard mining in rounds of their own, so that the table above stays
    # comparable with runs that had no soft row.
    _print_soft_against_hard('SSD300, same batch', lambda: plugin_step(mining),
                             lambda: plugin_step(soft_mining), mining, soft_mining, args.repeats)

    # RetinaNet size: the paper's CE + 1:3 mining baseline against focal loss on all anchors.
    mining_retina = _retina_mining_head(HARD)
    soft_retina = _retina_mining_head(SOFT)
    num_images, num_anchors, classes = 2, args.retina_anchors, 80
    g = torch.Generator().manual_seed(1)
    retina_scores = torch.randn(num_images, num_anchors, classes, generator=g) - 4
    retina_labels = torch.full((num_images, num_anchors), classes)
    pos = torch.rand(num_images, num_anchors, generator=g) < 1e-3
    retina_labels[pos] = torch.randint(0, classes, (int(pos.sum()),), generator=g)
    focal = MODELS.build(dict(type='SigmoidFocalLoss'))
    weights = torch.ones(num_images, num_anchors)
    retina_anchors = torch.rand(num_images, num_anchors, 4) * 100
    retina_anchors[..., 2:] += retina_anchors[..., :2]
    num_pos = float(pos.sum().clamp(min=1))
    x = retina_scores.requires_grad_()
    boxes = dict(bbox_pred=torch.zeros(num_images, num_anchors, 4, requires_grad=True),
                 bbox_targets=torch.zeros(num_images, num_anchors, 4),
                 bbox_weights=torch.zeros(num_images, num_anchors, 4))

    def mining_step(head):
        losses = head.loss_by_batch(x, anchors=retina_anchors, labels=retina_labels,
                                    label_weights=weights, avg_factor=num_pos, **boxes)
        (sum(losses['loss_cls']) + sum(losses['loss_bbox'])).backward()
        x.grad = boxes['bbox_pred'].grad = None

    def focal_step():
        focal(x.flatten(0, 1), retina_labels.flatten(), avg_factor=num_pos).backward()
        x.grad = None

    rows = measure_all({'plugin SigmoidFocalLoss, all anchors': focal_step,
                        'sigmoid CE + HardNegativeSampler 1:3': lambda: mining_step(mining_retina)},
                       args.repeats)
    rows[1] = _with_held_buffers(rows[1], mining_retina)
    print_table(f'RetinaNet size, {num_images} x {num_anchors} anchors x {classes} classes',
                rows, baseline='plugin SigmoidFocalLoss, all anchors')
    _print_soft_against_hard('RetinaNet size, same inputs', lambda: mining_step(mining_retina),
                             lambda: mining_step(soft_retina), mining_retina, soft_retina,
                             args.repeats)


def _print_soft_against_hard(title, hard_step, soft_step, hard_head, soft_head, repeats):
    hard_name = 'HardNegativeSampler 1:3, hard'
    rows = measure_all({hard_name: hard_step, "same, mode='soft', temperature=1": soft_step},
                       repeats)
    rows = [_with_held_buffers(rows[0], hard_head), _with_held_buffers(rows[1], soft_head)]
    print_table(f'{title}: soft against hard mining', rows, baseline=rows[0].name, extra={
        'soft vs hard mining (time)': f'{rows[1].seconds / rows[0].seconds:.2f}x'})


if __name__ == '__main__':
    main()
