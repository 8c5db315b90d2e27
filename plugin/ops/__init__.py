"""Pure-PyTorch core: loss functions and example mining. Imports neither mmdet nor mmcv."""
from .equalized_focal import equalized_focal_gammas, equalized_focal_loss
from .focal import (check_alpha, check_gamma, focal_loss_star, poly1_focal_loss,
                    sigmoid_focal_loss, softmax_focal_loss)
from .mining import (box_iou, greedy_nms_sorted, hard_negative_mask, ohem_mask,
                     soft_negative_weights)
from .row_gather import RowGather

__all__ = ['sigmoid_focal_loss', 'softmax_focal_loss', 'focal_loss_star', 'poly1_focal_loss',
           'equalized_focal_loss', 'equalized_focal_gammas',
           'hard_negative_mask', 'soft_negative_weights', 'ohem_mask', 'box_iou',
           'greedy_nms_sorted', 'RowGather', 'check_alpha', 'check_gamma']
