# SSD300 with the plugin's head and HardNegativeSampler (mmdet's SSDHead mining, 1:3).
# mmdet's reference: 25.5 box AP.
_base_ = 'mmdet::ssd/ssd300_coco.py'
custom_imports = dict(imports=['plugin'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(type='MiningSSDHead'),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
