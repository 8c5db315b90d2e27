# Focal-loss paper Table 1(a): alpha-balanced cross entropy (gamma=0), alpha=0.10.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.10)))
