# Focal loss (gamma = 2, alpha = .25) on all positives + the 3 highest-loss negatives per
# positive: both answers to the imbalance at once.
_base_ = './retinanet_r18_quick_focal.py'

model = dict(
    bbox_head=dict(type='MiningRetinaHead'),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
