# Equalized focal loss (CVPR 2022): per-class focusing from gradient statistics.
_base_ = './retinanet_r50_fpn_1x_coco_focal.py'

model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='EqualizedFocalLoss', use_sigmoid=True, num_classes=80, gamma_b=2.0,
    scale_factor=8.0, alpha=0.25, loss_weight=1.0)))
