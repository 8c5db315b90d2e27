# Focal-loss paper Appendix A: FL* with gamma=4, beta=0.
_base_ = '../retinanet/retinanet_r50_fpn_1x_coco_focal.py'

model = dict(bbox_head=dict(loss_cls=dict(type='FocalLossStar', gamma=4.0, beta=0.0)))
