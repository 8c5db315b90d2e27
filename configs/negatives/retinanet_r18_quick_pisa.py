# PISA (Cao et al., CVPR 2020) as mmdet ships it for RetinaNet: ISR-P re-weights the positives
# by their IoU-hierarchical rank, CARL adds a classification-aware regression loss; negatives
# are left to focal loss. An outside reference for the negatives grid.
# PISA's ISR-P and CARL decode the regression deltas themselves, so the box loss goes back
# to mmdet's PISA setting (smooth L1 on deltas) from the quick start's GIoU on decoded boxes.
_base_ = './retinanet_r18_quick_focal.py'

model = dict(
    bbox_head=dict(type='PISARetinaHead', reg_decoded_bbox=False,
                   loss_bbox=dict(_delete_=True, type='SmoothL1Loss', beta=0.11,
                                  loss_weight=1.0)),
    train_cfg=dict(isr=dict(k=2.0, bias=0.0), carl=dict(k=1.0, bias=0.2)))
