# COCO scale (R50-FPN, 600 px, 1x), outside reference for soft re-weighting: mmdet's GHM-C
# loss (gradient harmonizing, Li et al. 2019), every anchor weighted by the density of its
# gradient norm.
_base_ = '../ablations/paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='GHMC', bins=30, momentum=0.75, use_sigmoid=True, loss_weight=1.0)))
