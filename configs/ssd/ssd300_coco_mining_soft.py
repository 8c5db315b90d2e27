# SSD300 with soft negative mining: mmdet's 1:3 budget of negatives spent as weights that
# fall with the loss rank over an edge about one budget wide (temperature 0 = ssd300_coco_mining).
_base_ = './ssd300_coco_mining.py'

model = dict(train_cfg=dict(sampler=dict(mode='soft', temperature=1.0)))
