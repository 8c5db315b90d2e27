"""One training step of the quick-start RetinaNet: plugin SigmoidFocalLoss vs mmdet FocalLoss.

    python tools/benchmark_train_step.py [--steps 10] [--batch 8]

Same weights, same batch (generated in memory), forward + backward + optimizer step; the two
losses alternate step by step and the medians are compared.
"""
import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

import plugin  # noqa: F401
from _bench import compile_summary

CONFIG = Path(__file__).resolve().parents[1] / 'configs/quickstart/retinanet_r18_quickstart.py'
LOSSES = {
    'mmdet FocalLoss': dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25),
    'plugin SigmoidFocalLoss': dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0,
                                    alpha=0.25),
}


def _batch(batch_size: int, size: int, num_classes: int) -> dict:
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch_size):
        sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             batch_input_shape=(size, size)))
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * (size - 40)
        boxes = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 30], 1)
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, num_classes, (n,), generator=g))
        samples.append(sample)
    return dict(inputs=torch.rand(batch_size, 3, size, size, generator=g) * 255,
                data_samples=samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=128)
    args = parser.parse_args()
    cfg = Config.fromfile(str(CONFIG))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    models, optimizers = {}, {}
    for name, loss in LOSSES.items():
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.bbox_head.loss_cls = loss
        models[name] = MODELS.build(model_cfg)
    state = next(iter(models.values())).state_dict()
    for name, model in models.items():
        model.load_state_dict(state)
        model.train()
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = _batch(args.batch, args.size, cfg.model.bbox_head.num_classes)

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        start = time.perf_counter()
        batch = model.data_preprocessor(copy.deepcopy(data), training=True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        total = sum(v if isinstance(v, torch.Tensor) else sum(v) for v in losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        return time.perf_counter() - start

    first = {name: step(name) for name in LOSSES}  # includes compiling the plugin's kernels
    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for _ in range(args.steps):
        for name in LOSSES:
            times[name].append(step(name))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f'\n## Quick-start RetinaNet training step, batch {args.batch} x {args.size} px, '
          f'{torch.get_num_threads()} threads, median of {args.steps}\n')
    print('| loss | median s | first step s |\n|---|---:|---:|')
    for name in LOSSES:
        print(f'| {name} | {medians[name]:.3f} | {first[name]:.1f} |')
    ratio = medians['plugin SigmoidFocalLoss'] / medians['mmdet FocalLoss']
    print(f'\nplugin / mmdet step time: {ratio:.2f} (<= 1.0 means no slower)')
    print(f'kernels: {compile_summary()}')


if __name__ == '__main__':
    main()
