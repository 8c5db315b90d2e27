# The focal-loss paper's Table 1 setting: RetinaNet ResNet-50-FPN trained and tested at
# 600 px (shorter side), 1x schedule, the plugin's focal loss (gamma 2, alpha .25). Table 1's
# a-c grids and the appendix inherit this file; 1d inherits paper_r101_fpn_600px.py.
_base_ = '../retinanet/retinanet_r50_fpn_1x_coco_focal.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=(1000, 600), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
