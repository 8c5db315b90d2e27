# RetinaNet trained from scratch on the generated quick-start data, sized for a 2-core CPU:
# 1200 steps of batch 8 on 128 px images (~4-8 min), COCO bbox AP on the val split at the end.
#
#   python tools/generate_data.py --out data/generated
#   mim train mmdet configs/quickstart/retinanet_r18_quickstart.py --work-dir work_dirs/qs
#
# A longer or shorter run: --cfg-options train_cfg.max_iters=N param_scheduler.1.end=N
# (configs are evaluated eagerly, so `max_iters` below does not reach them from outside).
custom_imports = dict(imports=['plugin'], allow_failed_imports=False)

_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/datasets/quickstart_coco.py',
    'mmdet::_base_/default_runtime.py',
]

max_iters = 1200

model = dict(
    backbone=dict(
        depth=18,
        # Half width (32-256 channels): a quarter of the compute, and enough for shapes.
        base_channels=32,
        # Strides 8/16/32 only: objects are 8-40 px, stride 4 would cost most of the compute.
        out_indices=(1, 2, 3),
        # From scratch: nothing frozen and BN statistics learned; the base freezes both for
        # pretrained weights, which leaves a random network unable to learn.
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256], out_channels=64, start_level=0,
              add_extra_convs=False, num_outs=3),
    bbox_head=dict(
        num_classes=6,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        # GN: stable statistics for the randomly initialised head at batch 8.
        norm_cfg=dict(type='GN', num_groups=16, requires_grad=True),
        anchor_generator=dict(
            # One square anchor per scale, sides 8 * 2^(k/3) px: 8-13, 16-25, 32-51.
            octave_base_scale=1,
            scales_per_octave=3,
            ratios=[1.0],
            strides=[8, 16, 32]),
        # The plugin's fused focal loss (mmdet's FocalLoss gives the same numbers, slower).
        loss_cls=dict(type='SigmoidFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        # GIoU on decoded boxes: scale-free, so 8 px and 40 px boxes weigh alike, where the
        # base's L1 on deltas barely moved from scratch.
        reg_decoded_bbox=True,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0)),
    test_cfg=dict(nms_pre=500, score_thr=0.05, max_per_img=50))

# AdamW trains the randomly initialised detector far faster than SGD on this budget.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min=2e-5),
]

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    # Every 10 steps (a few seconds): the loss and the ETA show up right away.
    logger=dict(type='LoggerHook', interval=10),
    # interval=-1 with save_last: one checkpoint, at the end, whatever max_iters is.
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=True))
log_processor = dict(by_epoch=False, window_size=10)
randomness = dict(seed=0)
