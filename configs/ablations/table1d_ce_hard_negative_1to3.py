# Focal-loss paper Table 1(d) baseline: cross entropy + hard negative mining at 1:3.
_base_ = '../retinanet/retinanet_r50_fpn_1x_coco_focal.py'

model = dict(
    bbox_head=dict(
        type='MiningRetinaHead',
        loss_cls=dict(_delete_=True, type='CrossEntropyLoss', use_sigmoid=True,
                      loss_weight=1.0)),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
