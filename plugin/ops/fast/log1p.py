"""log1p(e) for e in [0, 1] as a polynomial, inside compiled float32 loops.

Why: a vectorized log1p is a costly call in the compiled sigmoid focal loop; the polynomial
is a few multiply-adds (timed by ``tools/benchmark_losses.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['log1p_unit', 'log1p_polynomial']

# log1p(e) / (2u) with u = e / (2 + e), as a polynomial in v = u^2 on [0, 1/9]: a least-squares
# fit reweighted towards minimax relative error (Lawson), max relative error 4.0e-9.
_COEFFICIENTS = (1.0000000039555668, 0.3333315752731701, 0.2001244510261989,
                 0.13980468393036233, 0.14088318489822574)
# Doubled, so that the loop computes u * poly rather than 2 * u * poly (exact either way).
_COEFFICIENTS_X2 = tuple(2 * c for c in _COEFFICIENTS)


def log1p_unit(e: Tensor) -> Tensor:
    """log1p(e) for e in [0, 1]: :func:`log1p_polynomial` in a compiled float32 loop (what
    float16/bfloat16 compute in too); eagerly each of its terms would be a pass over memory,
    and float64 needs more digits: there it is ``torch.log1p``."""
    if e.dtype == torch.float32 and torch.compiler.is_compiling():
        return log1p_polynomial(e)
    return torch.log1p(e)


def log1p_polynomial(e: Tensor) -> Tensor:
    """log1p(e) for float32 e in [0, 1], within 2 ulp: 2 atanh(u) with u = e / (2 + e) in
    [0, 1/3], a degree-4 polynomial in u^2."""
    u = e / (2 + e)
    v = u * u
    poly = _COEFFICIENTS_X2[-1]
    for coefficient in reversed(_COEFFICIENTS_X2[:-1]):
        poly = poly * v + coefficient
    return u * poly
