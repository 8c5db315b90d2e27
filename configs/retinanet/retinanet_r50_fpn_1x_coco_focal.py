# RetinaNet R50-FPN 1x on COCO with the plugin's sigmoid focal loss (gamma=2, alpha=0.25).
# mmdet's reference with its own FocalLoss: 36.5 box AP.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['plugin'], allow_failed_imports=False)

model = dict(bbox_head=dict(loss_cls=dict(type='SigmoidFocalLoss', gamma=2.0, alpha=0.25)))
