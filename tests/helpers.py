"""Small builders shared by tests: mmdet configs from the installed package, fake batches."""
import os

import torch
from mmengine.config import Config
from mmengine.structures import InstanceData


def mmdet_config(relative: str) -> Config:
    """Load a config shipped with mmdet, e.g. 'retinanet/retinanet_r50_fpn_1x_coco.py'."""
    import mmdet
    return Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                                        relative))


def random_gt(num_boxes, num_classes=80, size=300, generator=None):
    xy = torch.rand(num_boxes, 2, generator=generator) * size * 0.6
    wh = torch.rand(num_boxes, 2, generator=generator) * size * 0.3 + size * 0.05
    return InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                        labels=torch.randint(0, num_classes, (num_boxes,), generator=generator))


def img_metas(num_images, size):
    return [dict(img_shape=(size, size), pad_shape=(size, size), ori_shape=(size, size),
                 scale_factor=(1.0, 1.0), batch_input_shape=(size, size))
            for _ in range(num_images)]


def det_batch(boxes_per_image, size, num_classes=80, seed=0):
    """A model.loss/predict input: {'inputs': (B, 3, S, S), 'data_samples': [...]}."""
    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(seed)
    samples = []
    for meta, n in zip(img_metas(len(boxes_per_image), size), boxes_per_image):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = random_gt(n, num_classes, size, g)
        samples.append(sample)
    inputs = torch.rand(len(boxes_per_image), 3, size, size, generator=g) * 255
    return dict(inputs=inputs, data_samples=samples)
