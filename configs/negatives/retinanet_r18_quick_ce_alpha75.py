# No mining: alpha-balanced sigmoid cross entropy on every anchor (gamma = 0, alpha = .75,
# the paper's best alpha for CE in Table 1a).
_base_ = '../quickstart/retinanet_r18_quickstart.py'

model = dict(bbox_head=dict(loss_cls=dict(gamma=0.0, alpha=0.75)))
