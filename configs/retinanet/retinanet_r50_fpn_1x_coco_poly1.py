# Poly-1 focal loss (PolyLoss, ICLR 2022): FL + epsilon (1 - p_t)^(gamma + 1).
_base_ = './retinanet_r50_fpn_1x_coco_focal.py'

model = dict(bbox_head=dict(loss_cls=dict(type='PolyFocalLoss', epsilon=1.0)))
