# Cross entropy + soft negative mining whose temperature rises along a cosine from 0 (hard
# 1:3 mining) to 10 over the run: the reverse of retinanet_r18_quick_ce_soft_t10_to_hard.
_base_ = './retinanet_r18_quick_ce_soft_t10.py'

custom_hooks = [dict(type='SoftMiningTemperatureHook', start=0.0, end=10.0)]
