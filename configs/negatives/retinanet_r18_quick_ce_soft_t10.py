# Cross entropy + soft negative mining at temperature 10.0: the 1:3 budget of negatives
# spread by loss rank over an edge about 10.0 budgets wide (0 = hard mining).
_base_ = './retinanet_r18_quick_ce_hard1to3.py'

model = dict(train_cfg=dict(sampler=dict(mode='soft', temperature=10.0)))
