# COCO scale (R50-FPN, 600 px, 1x): focal loss (gamma 2, alpha .25) on all positives + the 3
# highest-loss negatives per positive: both answers to the imbalance at once.
_base_ = './retinanet_r50_fpn_600px_1x_coco_focal.py'

model = dict(
    bbox_head=dict(type='MiningRetinaHead'),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
