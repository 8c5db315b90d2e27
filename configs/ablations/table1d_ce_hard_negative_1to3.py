# Focal-loss paper Table 1(d) baseline: cross entropy + hard negative mining at 1:3.
# Sigmoid cross entropy is SigmoidFocalLoss with gamma=0 and no alpha (fused, so the
# sampler's ranking pass over all anchors is one read of the logits).
_base_ = './paper_r101_fpn_600px.py'

model = dict(
    bbox_head=dict(
        type='MiningRetinaHead',
        loss_cls=dict(type='SigmoidFocalLoss', gamma=0.0, alpha=None)),
    train_cfg=dict(sampler=dict(type='HardNegativeSampler', neg_pos_ratio=3)))
