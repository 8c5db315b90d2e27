# Focal-loss paper Table 1(d): OHEM, batch 512, NMS 0.5.
_base_ = './table1d_ohem_b256_nms07.py'

model = dict(train_cfg=dict(sampler=dict(batch_size=512, nms_thr=0.5)))
