# Focal-loss paper Table 1(d): OHEM 1:3, batch 512, NMS 0.7.
_base_ = './table1d_ohem_b512_nms07.py'

model = dict(train_cfg=dict(sampler=dict(neg_pos_ratio=3)))
