# Focal-loss paper Table 1(d): OHEM 1:3, batch 256, NMS 0.5.
_base_ = './table1d_ohem_b256_nms05.py'

model = dict(train_cfg=dict(sampler=dict(neg_pos_ratio=3)))
