# The focal-loss paper's Table 1(d) setting: as paper_r50_fpn_600px.py with ResNet-101-FPN.
_base_ = './paper_r50_fpn_600px.py'

model = dict(backbone=dict(depth=101,
                           init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))
