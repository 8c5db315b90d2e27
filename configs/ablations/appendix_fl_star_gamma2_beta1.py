# Focal-loss paper Appendix A: FL* with gamma=2, beta=1.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(type='FocalLossStar', gamma=2.0, beta=1.0)))
