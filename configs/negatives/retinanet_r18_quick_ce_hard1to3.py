# How hard must negatives be mined? Hard end: sigmoid cross entropy + SSD's hard negative
# mining, all positives and the 3 highest-loss negatives per positive (focal-loss paper 1d).
_base_ = '../quickstart/retinanet_r18_quickstart.py'

model = dict(
    bbox_head=dict(type='MiningRetinaHead', loss_cls=dict(gamma=0.0, alpha=None)),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
