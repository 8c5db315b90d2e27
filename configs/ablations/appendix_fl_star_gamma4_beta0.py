# Focal-loss paper Appendix A: FL* with gamma=4, beta=0.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(type='FocalLossStar', gamma=4.0, beta=0.0)))
