"""The pure-PyTorch core against torchvision.ops.sigmoid_focal_loss on a CUDA device.

    python tools/benchmark_cuda.py [--anchors 100000] [--images 2 16] [--classes 80]

Needs torch with CUDA and torchvision; no mmcv/mmdet. First checks the numbers (loss and
gradient against torchvision and a float64 formula), then times forward + backward in float32
and bfloat16: median time and peak extra memory (``torch.cuda.max_memory_allocated``). The
plugin gets dense one-hot targets like torchvision (same work) and, separately, class indices
(what a detection head passes). Then the other focal variants and the mining masks.
"""
import argparse
import os
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _bench import compile_summary, measure, measure_all, print_table  # noqa: E402
from plugin.ops import (equalized_focal_loss, focal_loss_star,  # noqa: E402
                        hard_negative_mask, ohem_mask, poly1_focal_loss, sigmoid_focal_loss,
                        softmax_focal_loss)


def _labels(rows: int, classes: int, device: torch.device) -> torch.Tensor:
    """Class indices with ~0.1% positives; index ``classes`` is background."""
    labels = torch.full((rows,), classes, device=device)
    positives = torch.randperm(rows, device=device)[:max(rows // 1000, 1)]
    labels[positives] = torch.randint(0, classes, (positives.numel(),), device=device)
    return labels


def _float64_focal(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-alpha_t (1 - p_t)^2 log p_t in float64, alpha = 0.25, summed."""
    x, t = logits.double(), targets.double()
    p = torch.sigmoid(x)
    p_t = t * p + (1 - t) * (1 - p)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction='none')
    return ((0.25 * t + 0.75 * (1 - t)) * (1 - p_t) ** 2 * ce).sum()


def _loss_and_grad(fn, logits: torch.Tensor, target: torch.Tensor) -> tuple:
    x = logits.detach().requires_grad_()
    loss = fn(x, target, alpha=0.25, gamma=2.0, reduction='sum')
    loss.backward()
    return loss.detach().double(), x.grad.double()


def check_numbers(torchvision_focal, device: torch.device, classes: int) -> None:
    """Loss and gradient of the plugin against torchvision and a float64 formula."""
    rows = 20_000
    labels = _labels(rows, classes, device)
    one_hot = torch.nn.functional.one_hot(labels, classes + 1)[:, :classes]
    logits = torch.randn(rows, classes, device=device) * 4 - 2
    reference = logits.double().requires_grad_()
    expected = _float64_focal(reference, one_hot)
    expected.backward()
    print('\n## Numbers (20k x 80, reduction sum, against a float64 formula)\n')
    print('| implementation | dtype | loss rel. error | max grad abs. error |')
    print('|---|---|---:|---:|')
    for dtype in (torch.float32, torch.bfloat16):
        x = logits.to(dtype)
        ref_x = x.double().requires_grad_()  # the reference sees the same rounded logits
        ref = _float64_focal(ref_x, one_hot)
        ref.backward()
        for name, fn, target in (('torchvision', torchvision_focal, one_hot.to(dtype)),
                                 ('plugin, one-hot', sigmoid_focal_loss, one_hot.to(dtype)),
                                 ('plugin, indices', sigmoid_focal_loss, labels)):
            loss, grad = _loss_and_grad(fn, x, target)
            rel = float((loss - ref.detach()).abs() / ref.detach().abs())
            grad_err = float((grad - ref_x.grad).abs().max())
            print(f'| {name} | {str(dtype)[6:]} | {rel:.2e} | {grad_err:.2e} |')
    sys.stdout.flush()


def time_sigmoid(torchvision_focal, device: torch.device, images: int, anchors: int,
                 classes: int, repeats: int) -> None:
    rows = images * anchors
    labels = _labels(rows, classes, device)
    one_hot = torch.nn.functional.one_hot(labels, classes + 1)[:, :classes]
    for dtype in (torch.float32, torch.bfloat16):
        logits = (torch.randn(rows, classes, device=device) - 4).to(dtype)
        dense = one_hot.to(dtype)

        def step(fn, target, logits=logits):
            def run():
                x = logits.detach().requires_grad_()
                fn(x, target, alpha=0.25, gamma=2.0, reduction='sum').backward()
                return x.grad
            return run

        def eager(fn):
            def run():
                os.environ['PLUGIN_COMPILE'] = '0'
                try:
                    return fn()
                finally:
                    del os.environ['PLUGIN_COMPILE']
            return run

        results = measure_all({
            'torchvision sigmoid_focal_loss': step(torchvision_focal, dense),
            'plugin, one-hot targets': step(sigmoid_focal_loss, dense),
            'plugin, class indices': step(sigmoid_focal_loss, labels),
            'plugin, class indices, eager': eager(step(sigmoid_focal_loss, labels)),
            'floor (read logits, write grad)': partial(torch.mul, logits, 0.5),
        }, repeats, device)
        floor = results[-1].seconds
        print_table(f'{str(dtype)[6:]}, {images} x {anchors} anchors x {classes} classes, '
                    'forward + backward', results, baseline='torchvision sigmoid_focal_loss',
                    extra={'plugin (indices) vs floor':
                           f'{results[2].seconds / floor:.2f}x the floor'})


def time_variants(device: torch.device, images: int, anchors: int, classes: int,
                  repeats: int) -> None:
    rows = images * anchors
    labels = _labels(rows, classes, device)
    logits = torch.randn(rows, classes, device=device) - 4
    softmax_logits = torch.cat([logits, torch.zeros(rows, 1, device=device)], 1)
    class_gamma = torch.linspace(2.0, 4.0, classes, device=device)

    def step(fn, x=logits):
        def run():
            pred = x.detach().requires_grad_()
            fn(pred, labels, reduction='sum').backward()
            return pred.grad
        return run

    results = measure_all({
        'sigmoid focal': step(sigmoid_focal_loss),
        'FL*': step(partial(focal_loss_star, alpha=0.25, gamma=2.0, beta=1.0)),
        'Poly-1': step(poly1_focal_loss),
        'EFL': step(partial(equalized_focal_loss, class_gamma=class_gamma,
                            on_gradient_totals=lambda totals: None)),
        'softmax focal (C + 1 outputs)': step(softmax_focal_loss, softmax_logits),
    }, repeats, device)
    print_table(f'Variants, float32, {images} x {anchors} x {classes}, forward + backward',
                results, baseline='sigmoid focal')


def time_mining(device: torch.device, repeats: int) -> None:
    rows = []
    for name, images, anchors in (('SSD300 batch 32', 32, 8732), ('RetinaNet 2 x 100k', 2,
                                                                   100_000)):
        losses = torch.rand(images, anchors, device=device)
        positive = torch.rand(images, anchors, device=device) < 0.002
        negative = ~positive
        xy = torch.rand(images, anchors, 2, device=device) * 800
        boxes = torch.cat([xy, xy + 32 + torch.rand_like(xy) * 64], -1)
        rows.append(measure(f'{name}: hard negatives 3:1', partial(
            hard_negative_mask, losses, positive, negative, 3.0), repeats, device))
        rows.append(measure(f'{name}: OHEM 256, NMS 0.7', partial(
            ohem_mask, losses, boxes, positive, positive | negative, 256, 0.7), repeats,
            device))
    print_table('Mining masks (no loss), per batch', rows, baseline=rows[0].name)


def profile_plugin(device: torch.device, images: int, anchors: int, classes: int) -> None:
    """Where a plugin step's device time goes: its kernels by total CUDA time."""
    from torch.profiler import ProfilerActivity, profile
    labels = _labels(images * anchors, classes, device)
    logits = torch.randn(images * anchors, classes, device=device) - 4

    def step():
        x = logits.detach().requires_grad_()
        sigmoid_focal_loss(x, labels, reduction='sum', normalizer=100.0).backward()

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    print(f'\n## Plugin step, float32, {images} x {anchors} x {classes}: 10 steps, kernels\n')
    print(prof.key_averages().table(sort_by='cuda_time_total', row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--anchors', type=int, default=100_000)
    parser.add_argument('--images', type=int, nargs='+', default=[2, 16])
    parser.add_argument('--classes', type=int, default=80)
    parser.add_argument('--repeats', type=int, default=50)
    parser.add_argument('--device', default='cuda', help='cpu only for a dry run of the script')
    args = parser.parse_args()
    import torchvision
    from torchvision.ops import sigmoid_focal_loss as torchvision_focal
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    print(f'device: {name}, torch {torch.__version__}, torchvision {torchvision.__version__}')
    torch.manual_seed(0)
    check_numbers(torchvision_focal, device, args.classes)
    time_sigmoid(torchvision_focal, device, args.images[0], args.anchors, args.classes,
                 args.repeats)
    time_variants(device, args.images[0], args.anchors, args.classes, args.repeats)
    time_mining(device, args.repeats)
    for images in args.images[1:]:
        time_sigmoid(torchvision_focal, device, images, args.anchors, args.classes,
                     args.repeats)
    if device.type == 'cuda':
        profile_plugin(device, args.images[-1], args.anchors, args.classes)
    print(f'\nkernels: {compile_summary()}')


if __name__ == '__main__':
    main()
