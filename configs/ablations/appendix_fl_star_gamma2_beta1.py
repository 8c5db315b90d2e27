# Focal-loss paper Appendix A: FL* with gamma=2, beta=1.
_base_ = '../retinanet/retinanet_r50_fpn_1x_coco_focal.py'

model = dict(bbox_head=dict(loss_cls=dict(type='FocalLossStar', gamma=2.0, beta=1.0)))
