# COCO scale, the paper's Table 1 setting (RetinaNet R50-FPN, 600 px, 1x). How hard must
# negatives be mined? Hard end: sigmoid cross entropy + SSD's hard negative mining, all
# positives and the 3 highest-loss negatives per positive (the quick-scale twin:
# retinanet_r18_quick_ce_hard1to3.py; the R101 setting: table1d_ce_hard_negative_1to3.py).
_base_ = '../ablations/paper_r50_fpn_600px.py'

model = dict(
    bbox_head=dict(type='MiningRetinaHead', loss_cls=dict(gamma=0.0, alpha=None)),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
