# SSD300 mining that still teaches background on images without objects.
_base_ = './ssd300_coco_mining.py'

model = dict(train_cfg=dict(sampler=dict(min_neg_per_image=32)))
