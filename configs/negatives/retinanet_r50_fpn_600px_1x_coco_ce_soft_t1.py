# COCO scale (R50-FPN, 600 px, 1x): cross entropy + soft negative mining at temperature 1.0,
# the 1:3 budget of negatives spread by loss rank over an edge about 1.0 budgets wide.
_base_ = './retinanet_r50_fpn_600px_1x_coco_ce_hard1to3.py'

model = dict(train_cfg=dict(sampler=dict(mode='soft', temperature=1.0)))
