# COCO scale (R50-FPN, 600 px, 1x): cross entropy + soft negative mining whose temperature
# falls along a cosine from 10 to 0 (hard 1:3 mining) over the run (the quick-scale twin:
# retinanet_r18_quick_ce_soft_t10_to_hard.py).
_base_ = './retinanet_r50_fpn_600px_1x_coco_ce_soft_t10.py'

custom_hooks = [dict(type='SoftMiningTemperatureHook', start=10.0, end=0.0)]
