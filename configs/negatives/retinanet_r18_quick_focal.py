# Focal loss on every anchor (gamma = 2, alpha = .25): the quick-start model itself.
_base_ = '../quickstart/retinanet_r18_quickstart.py'

model = dict(bbox_head=dict(loss_cls=dict(type='SigmoidFocalLoss', gamma=2.0, alpha=0.25)))
