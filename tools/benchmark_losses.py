"""Focal-loss family, forward + backward, against mmdet's FocalLoss and a memory-traffic floor.

    python tools/benchmark_losses.py [--anchors 100000] [--images 2] [--classes 80]

Input of RetinaNet size by default: 2 images x 100k anchors x 80 classes, float32,
class-index targets with ~0.1% positives, per-anchor weights, avg_factor = positives.
The floor reads the logits once and writes a gradient once (``logits * 0.5``).
"""
import argparse

import torch
from mmdet.models.losses import FocalLoss
from mmdet.registry import MODELS

import plugin  # noqa: F401
from _bench import compile_summary, ensure_malloc_returns_memory, measure_all, print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--anchors', type=int, default=100_000, help='anchors per image')
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--classes', type=int, default=80)
    parser.add_argument('--repeats', type=int, default=9)
    args = parser.parse_args()
    ensure_malloc_returns_memory()

    torch.manual_seed(0)
    rows, classes = args.images * args.anchors, args.classes
    logits = torch.randn(rows, classes) - 4.0
    labels = torch.full((rows,), classes)
    positives = torch.randperm(rows)[:max(rows // 1000, 1)]
    labels[positives] = torch.randint(0, classes, (positives.numel(),))
    weights = torch.ones(rows)
    avg_factor = float(positives.numel())

    def step(loss_fn, x=logits, target=labels):
        def run():
            pred = x.detach().requires_grad_()
            loss_fn(pred, target, weights, avg_factor=avg_factor).backward()
            return pred.grad
        return run

    plugin_focal = MODELS.build(dict(type='SigmoidFocalLoss'))
    results = measure_all({
        'floor (read logits, write grad)': lambda: logits * 0.5,
        'mmdet FocalLoss (CPU path)': step(FocalLoss()),
        'plugin SigmoidFocalLoss': step(plugin_focal),
    }, args.repeats)
    print_table(f'Sigmoid focal loss, forward + backward, {args.images} x {args.anchors} anchors '
                f'x {classes} classes, {torch.get_num_threads()} threads', results,
                baseline='mmdet FocalLoss (CPU path)', extra={
                    'plugin vs floor (time)': f'{results[2].seconds / results[0].seconds:.2f}x '
                                              'the floor',
                    'kernels': compile_summary()})

    softmax_logits = torch.cat([logits, torch.zeros(rows, 1)], 1)
    variants = measure_all({
        'SigmoidFocalLoss': step(plugin_focal),
        'FocalLossStar': step(MODELS.build(dict(type='FocalLossStar'))),
        'PolyFocalLoss': step(MODELS.build(dict(type='PolyFocalLoss'))),
        'EqualizedFocalLoss': step(MODELS.build(
            dict(type='EqualizedFocalLoss', num_classes=classes)).train()),
        'SoftmaxFocalLoss (C + 1 outputs)': step(MODELS.build(dict(type='SoftmaxFocalLoss')),
                                                 x=softmax_logits),
    }, args.repeats)
    print_table('Plugin variants against the plugin sigmoid focal loss', variants,
                baseline='SigmoidFocalLoss')


if __name__ == '__main__':
    main()
