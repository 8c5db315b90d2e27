# Focal-loss paper Table 1(d): OHEM (cross entropy, NMS over anchors, top-B per image).
_base_ = './table1d_ce_hard_negative_1to3.py'

model = dict(train_cfg=dict(sampler=dict(
    mode='ohem', batch_size=256, nms_thr=0.7, neg_pos_ratio=None)))
