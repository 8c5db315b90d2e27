"""Former name of :mod:`plugin.ops.fast.compile`, kept for ``mining.py`` until it imports
:class:`~plugin.ops.fast.compile.CompiledKernel` (``static_trailing_dims=0``) itself."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .fast.compile import CompiledKernel

__all__ = ['FusedKernel']


def FusedKernel(fn: Callable[..., Any], class_dim_static: bool = True) -> CompiledKernel:  # noqa: N802
    return CompiledKernel(fn, static_trailing_dims=1 if class_dim_static else 0)
