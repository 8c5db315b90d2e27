# Softmax focal loss: C + 1 outputs with background last.
_base_ = './retinanet_r50_fpn_1x_coco_focal.py'

model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='SoftmaxFocalLoss', use_sigmoid=False, gamma=2.0, alpha=0.25,
    loss_weight=1.0)))
