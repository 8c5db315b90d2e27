"""The fast path: each loss as compiled, fused value/gradient kernels.

The readable formulas in :mod:`plugin.ops.focal` and :mod:`plugin.ops.equalized_focal` say
what the losses are and run where no compiler is used (``PLUGIN_COMPILE=0``, other devices,
inside a caller's ``torch.compile``); these kernels must equal them, and the tests check both
against float64 formulas. Modules: ``compile`` (the compile cache, per-kernel failures),
``autograd`` (:class:`FusedLoss`), ``reduction``, ``targets``, ``log1p``, and the kernels of
each family (``sigmoid``, ``focal_star``, ``softmax``, ``equalized``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .autograd import FusedLoss, caches_gradient
from .compile import CompiledKernel, compile_enabled, kernel_report
from .equalized import class_gradient_parts, class_gradient_totals
from .focal_star import focal_star_grad, focal_star_value
from .sigmoid import sigmoid_focal_grad, sigmoid_focal_value
from .softmax import softmax_focal_grad, softmax_focal_value, softmax_row_terms

__all__ = ['SIGMOID_FOCAL', 'EQUALIZED_FOCAL', 'FOCAL_STAR', 'SOFTMAX_FOCAL', 'applies',
           'softmax_row_terms', 'FusedLoss', 'CompiledKernel', 'caches_gradient',
           'compile_enabled', 'kernel_report']

SIGMOID_FOCAL = FusedLoss(sigmoid_focal_value, sigmoid_focal_grad, name='sigmoid_focal')
EQUALIZED_FOCAL = FusedLoss(sigmoid_focal_value, sigmoid_focal_grad, name='equalized_focal',
                            statistics=class_gradient_parts, summarize=class_gradient_totals)
FOCAL_STAR = FusedLoss(focal_star_value, focal_star_grad, name='focal_star')
SOFTMAX_FOCAL = FusedLoss(softmax_focal_value, softmax_focal_grad, name='softmax_focal')


def applies(inputs: Tensor) -> bool:
    """Whether a loss on ``inputs`` takes the fast path: compiling is enabled, the device is
    a CPU or CUDA one, there is something to compute, and no outer ``torch.compile`` is
    tracing the call (it then compiles the readable formula itself)."""
    return (compile_enabled() and inputs.numel() > 0
            and inputs.device.type in ('cpu', 'cuda') and not torch.compiler.is_compiling())
