# SSD300 with sigmoid focal loss on every anchor instead of hard negative mining.
_base_ = './ssd300_coco_mining.py'

model = dict(
    bbox_head=dict(loss_cls=dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0,
                                 alpha=0.25, loss_weight=1.0)),
    train_cfg=dict(sampler=dict(_delete_=True, type='PseudoSampler')))
