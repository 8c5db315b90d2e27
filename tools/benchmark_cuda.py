"""The pure-PyTorch core against torchvision.ops.sigmoid_focal_loss on a CUDA device.

    python tools/benchmark_cuda.py [--anchors 100000] [--images 2] [--classes 80]

Needs torch with CUDA and torchvision; no mmcv/mmdet. Forward + backward, float32 and
bfloat16, median time and peak extra memory (``torch.cuda.max_memory_allocated``). The plugin
gets dense one-hot targets like torchvision (same work) and, separately, class indices (what
a detection head passes).
"""
import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin.bench.measure import measure, print_table  # noqa: E402
from plugin.ops import fusion, sigmoid_focal_loss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--anchors', type=int, default=100_000)
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--classes', type=int, default=80)
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args()
    from torchvision.ops import sigmoid_focal_loss as torchvision_focal
    device = torch.device('cuda')
    print(f'device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}')
    rows, classes = args.images * args.anchors, args.classes
    torch.manual_seed(0)
    labels = torch.full((rows,), classes, device=device)
    positives = torch.randperm(rows, device=device)[:max(rows // 1000, 1)]
    labels[positives] = torch.randint(0, classes, (positives.numel(),), device=device)
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

        results = [
            measure('torchvision sigmoid_focal_loss', step(torchvision_focal, dense),
                    args.repeats, device),
            measure('plugin, one-hot targets', step(sigmoid_focal_loss, dense), args.repeats,
                    device),
            measure('plugin, class indices', step(sigmoid_focal_loss, labels), args.repeats,
                    device),
            measure('floor (read logits, write grad)', partial(torch.mul, logits, 0.5),
                    args.repeats, device),
        ]
        print_table(f'{dtype}, {args.images} x {args.anchors} anchors x {classes} classes, '
                    'forward + backward', results, baseline='torchvision sigmoid_focal_loss',
                    extra={'first-call compile seconds': str(fusion.first_compile_seconds())})


if __name__ == '__main__':
    main()
