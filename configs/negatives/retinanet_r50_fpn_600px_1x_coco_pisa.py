# COCO scale (R50-FPN, 600 px, 1x), outside reference: PISA (Cao et al., CVPR 2020) as mmdet
# ships it for RetinaNet (configs/pisa/pisa_retinanet_r50_fpn_1x_coco.py): ISR-P re-weights
# the positives, CARL adds a classification-aware regression loss, focal loss on the rest;
# smooth L1 on the deltas, which ISR-P and CARL decode themselves.
_base_ = './retinanet_r50_fpn_600px_1x_coco_focal.py'

model = dict(
    bbox_head=dict(type='PISARetinaHead',
                   loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=0.11,
                                  loss_weight=1.0)),
    train_cfg=dict(isr=dict(k=2.0, bias=0.0), carl=dict(k=1.0, bias=0.2)))
