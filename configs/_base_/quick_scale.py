# The quick scale of tools/reproduce.py: the quick-start RetinaNet made imbalanced enough to
# show the focal-loss paper's effects, on a schedule where 7 configs x 3 seeds fit in an hour
# on a 2-core CPU. Measurements behind each choice: docs/benchmarks.md, "The quick scale".
#
#   python tools/reproduce.py table1d --scale quick --seeds 0 1 2 --out ~/runs/repro
#
# Data: the quick-start generator with 1000 validation images instead of 250 (evaluation is
# cheap; the AP's sampling noise shrinks). tools/reproduce.py writes it when it is absent:
#   python tools/generate_data.py --out data/quick_scale --num-val 1000
_base_ = '../quickstart/retinanet_r18_quickstart.py'

data_root = 'data/quick_scale/'
max_iters = 600

model = dict(
    bbox_head=dict(
        # The paper's 9 anchors per location (3 scales x 3 aspect ratios): 3x the negatives
        # of the quick start, nearly all of them easy.
        anchor_generator=dict(ratios=[0.5, 1.0, 2.0])))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min=2e-5),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=50),
    # Periodic checkpoints (only the newest kept): an interrupted run resumes from it.
    checkpoint=dict(interval=100, max_keep_ckpts=1, save_last=True))
