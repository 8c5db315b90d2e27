"""OHEM selection (loss ranking + NMS over anchors) against mmcv's NMS run image by image.

    python tools/benchmark_ohem.py [--images 8] [--repeats 5]

The anchors of the quick scale (``configs/_base_/quick_scale.py``: 9 per location, strides
8/16/32 on 128 px, 3,024 per image), random losses and ~8 positives per image, for the OHEM
settings of the focal-loss paper's Table 1d. The stock path is the obvious loop: per image,
``mmcv.ops.nms`` (C++) over every candidate scored by its loss, then the top ``batch_size``
survivors (with a ratio: the best ceil(batch / (1 + ratio)) positives, then ratio x as many
negatives). ``plugin.ops.ohem_mask`` does the same for the whole batch; both selections are
checked to be identical before anything is timed.
"""
import argparse
import functools

import torch
from mmcv.ops import nms
from mmdet.registry import TASK_UTILS
from mmengine.config import Config

from _bench import measure_all, print_table
import plugin  # noqa: F401  (registers the plugin's types the config names)
from plugin.ops import ohem_mask

QUICK_SCALE = 'configs/_base_/quick_scale.py'
IMAGE_SIZE = 128
# (batch_size, nms_thr, neg_pos_ratio), as in configs/ablations/table1d_*.
SETTINGS = [(128, 0.5, None), (256, 0.7, None), (128, 0.7, None), (512, 0.5, None),
            (128, 0.5, 3.0)]


def quick_scale_anchors(num_images: int) -> torch.Tensor:
    """The anchors of one quick-scale image (its config's generator, 128 px), per image."""
    cfg = Config.fromfile(QUICK_SCALE)
    generator = TASK_UTILS.build(cfg.model.bbox_head.anchor_generator)
    sizes = [(IMAGE_SIZE // h, IMAGE_SIZE // w) for h, w in generator.strides]
    anchors = torch.cat(generator.grid_priors(sizes, device='cpu'))
    return anchors.expand(num_images, -1, -1).contiguous()


def ohem_per_image(losses, boxes, positive, candidate, batch_size, nms_thr, neg_pos_ratio):
    """The stock loop: mmcv's NMS over each image's candidates, then the selection rule."""
    chosen = torch.zeros_like(candidate)
    for image in range(losses.shape[0]):
        index = candidate[image].nonzero().flatten()
        _, kept = nms(boxes[image, index], losses[image, index], nms_thr)
        survivors = index[kept]  # best first
        if neg_pos_ratio is None:
            chosen[image, survivors[:batch_size]] = True
            continue
        is_pos = positive[image, survivors]
        pos = survivors[is_pos][:-(-batch_size // (1 + int(neg_pos_ratio)))]
        num_neg = min(int(neg_pos_ratio * len(pos)), batch_size - len(pos))
        chosen[image, pos] = True
        chosen[image, survivors[~is_pos][:num_neg]] = True
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', type=int, default=8, help='images per batch')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    boxes = quick_scale_anchors(args.images)
    losses = torch.rand(boxes.shape[:2], generator=g)
    candidate = torch.rand(boxes.shape[:2], generator=g) < 0.99  # the ignored band left out
    positive = candidate & (torch.rand(boxes.shape[:2], generator=g) < 8 / boxes.shape[1])
    for batch_size, nms_thr, ratio in SETTINGS:
        inputs = (losses, boxes, positive, candidate, batch_size, nms_thr, ratio)
        if not torch.equal(ohem_mask(*inputs), ohem_per_image(*inputs)):
            raise SystemExit(f'selections differ at batch {batch_size}, nms {nms_thr}')
        rows = measure_all({'mmcv nms per image': functools.partial(ohem_per_image, *inputs),
                            'plugin ohem_mask (batched)': functools.partial(ohem_mask, *inputs)},
                           args.repeats)
        ratio_name = '' if ratio is None else f', 1:{ratio:g}'
        print_table(f'OHEM b{batch_size}, NMS {nms_thr}{ratio_name}: {args.images} x '
                    f'{boxes.shape[1]} anchors, {torch.get_num_threads()} threads', rows,
                    baseline='mmcv nms per image')


if __name__ == '__main__':
    main()
