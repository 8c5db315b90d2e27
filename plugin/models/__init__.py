"""MMDetection adapters: registration, config arguments and validation over plugin.ops."""
from .dense_heads import MiningRetinaHead, MiningSSDHead
from .losses import (DRLoss, EqualizedFocalLoss, FocalLossStar, PolyFocalLoss,
                     SigmoidFocalLoss, SoftmaxFocalLoss)
from .hooks import SoftMiningTemperatureHook
from .samplers import HardNegativeSampler

__all__ = ['SigmoidFocalLoss', 'SoftmaxFocalLoss', 'FocalLossStar', 'PolyFocalLoss',
           'EqualizedFocalLoss', 'DRLoss', 'HardNegativeSampler', 'SoftMiningTemperatureHook',
           'MiningRetinaHead', 'MiningSSDHead']
