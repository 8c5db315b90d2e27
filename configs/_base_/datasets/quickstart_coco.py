# The generated quick-start data (`python tools/generate_data.py --out data/generated`):
# 128 px images, six shape classes with a Zipf long tail, mostly small objects.
#
# Real COCO instead: configs are evaluated eagerly, so `data_root` is written into each
# dataloader and evaluator below, and a child config overrides it there. With COCO's own
# layout (data/coco/annotations/instances_{train,val}2017.json, train2017/, val2017/), e.g.
# configs/quickstart/retinanet_r18_coco.py (checked on shared/data/coco128):
#
#   _base_ = './retinanet_r18_quickstart.py'
#   data_root = 'data/coco/'
#   coco = dict(data_root=data_root, metainfo=None)  # None: CocoDataset's 80 classes
#   train_dataloader = dict(dataset=dict(
#       **coco, ann_file='annotations/instances_train2017.json',
#       data_prefix=dict(img='train2017/')))
#   val_dataloader = dict(dataset=dict(
#       **coco, ann_file='annotations/instances_val2017.json',
#       data_prefix=dict(img='val2017/')))
#   test_dataloader = val_dataloader
#   val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
#   test_evaluator = val_evaluator
#   model = dict(bbox_head=dict(num_classes=80))
#
# Real photos also want a larger `scale` in both pipelines' Resize (and anchors to match).
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

dataset_type = 'CheckedCocoDataset'  # CocoDataset that names a missing path and its fix
data_root = 'data/generated/'
classes = ('circle', 'square', 'triangle', 'cross', 'ring', 'diamond')
metainfo = dict(classes=classes)
img_scale = (128, 128)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # Both flips keep every class (the shapes are symmetric or drawn either way up).
    dict(type='RandomFlip', prob=[0.25, 0.25], direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]

train_dataloader = dict(
    batch_size=8,
    # One worker: two cores are shared by the model and the decoding of tiny PNGs.
    num_workers=1,
    persistent_workers=True,
    # Iteration-based training: an endless sampler, the step count sets the time spent.
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        # Background-only images stay: they are the negatives this project is about.
        filter_cfg=dict(filter_empty_gt=False, min_size=0),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# classwise: the per-class AP table shows the long tail, the point of this project.
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json', classwise=True)
test_evaluator = val_evaluator
