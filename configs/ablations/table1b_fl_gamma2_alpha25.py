# Focal-loss paper Table 1(b): focal loss with gamma=2, alpha=.25.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=2.0, alpha=0.25)))
