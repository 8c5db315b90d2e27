# Focal-loss paper Table 1(b): focal loss with gamma=0.5, alpha=.50.
_base_ = './paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.5, alpha=0.5)))
