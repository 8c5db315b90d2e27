# Focal-loss paper Table 1(b): focal loss with gamma=0.1, alpha=.75.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.1, alpha=0.75)))
