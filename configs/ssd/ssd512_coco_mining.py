# SSD512 with the plugin's head and HardNegativeSampler. mmdet's reference: 29.5 box AP.
_base_ = 'mmdet::ssd/ssd512_coco.py'
custom_imports = dict(imports=['plugin'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(type='MiningSSDHead'),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
