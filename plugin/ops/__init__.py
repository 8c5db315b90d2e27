"""Pure-PyTorch core: loss functions and example mining. Imports neither mmdet nor mmcv."""
from .dr_loss import dr_loss
from .equalized_focal import equalized_focal_gammas, equalized_focal_loss
from .fast import compile_enabled, kernel_report
from .fast.targets import upcast
from .focal import focal_loss_star, poly1_focal_loss, sigmoid_focal_loss, softmax_focal_loss
from .mining import hard_negative_mask, ohem_mask, soft_negative_weights
from .nms import box_iou, greedy_nms_sorted
from .params import (DR_GROUPINGS, REDUCTIONS, DRLossParams, EqualizedFocalParams,
                     FocalStarParams, Poly1FocalParams, SigmoidFocalParams, SoftmaxFocalParams,
                     check_alpha, check_reduction)
from .row_gather import RowGather

__all__ = ['sigmoid_focal_loss', 'softmax_focal_loss', 'focal_loss_star', 'poly1_focal_loss',
           'equalized_focal_loss', 'equalized_focal_gammas', 'dr_loss', 'DRLossParams',
           'DR_GROUPINGS',
           'SigmoidFocalParams', 'Poly1FocalParams', 'FocalStarParams', 'SoftmaxFocalParams',
           'EqualizedFocalParams', 'REDUCTIONS', 'check_alpha', 'check_reduction',
           'compile_enabled', 'kernel_report', 'upcast',
           'hard_negative_mask', 'soft_negative_weights', 'ohem_mask', 'box_iou',
           'greedy_nms_sorted', 'RowGather']
