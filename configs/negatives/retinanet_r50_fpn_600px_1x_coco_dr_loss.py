# COCO scale (R50-FPN, 600 px, 1x), outside reference: DR Loss (Qian et al. 2020), each
# image's positive and negative sigmoid scores ranked as two distributions, the paper's
# constants; MiningRetinaHead (with the base's PseudoSampler, RetinaHead) so that each image
# is ranked over all its levels, as in the paper; the images' losses averaged, the scale of
# the authors' code (one loss per GPU batch).
_base_ = '../ablations/paper_r50_fpn_600px.py'

model = dict(bbox_head=dict(type='MiningRetinaHead', loss_cls=dict(
    _delete_=True, type='DRLoss', use_sigmoid=True, reduction='mean', loss_weight=1.0)))
