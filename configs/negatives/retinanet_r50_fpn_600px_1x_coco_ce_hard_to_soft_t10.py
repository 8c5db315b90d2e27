# COCO scale (R50-FPN, 600 px, 1x): cross entropy + soft negative mining whose temperature
# rises along a cosine from 0 (hard 1:3 mining) to 10 over the run (the quick-scale twin:
# retinanet_r18_quick_ce_hard_to_soft_t10.py).
_base_ = './retinanet_r50_fpn_600px_1x_coco_ce_soft_t10.py'

custom_hooks = [dict(type='SoftMiningTemperatureHook', start=0.0, end=10.0)]
