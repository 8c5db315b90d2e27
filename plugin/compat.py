"""What mmengine 0.10 / mmdet 3.3 need on today's torch: loading their own checkpoints.

Since torch 2.6, ``torch.load`` unpickles with ``weights_only=True`` unless told otherwise,
and mmengine 0.10.7 never tells it otherwise. A checkpoint written by mmengine's ``Runner``
holds a few non-tensor objects (the message hub's ``HistoryBuffer`` logs, numpy arrays and
scalars), so ``--resume``, ``load_from`` and ``tools/test.py CONFIG CKPT`` all fail with
``UnpicklingError: Weights only load failed``.

:func:`allow_mmengine_checkpoints` adds exactly those objects to torch's weights-only
allowlist. ``weights_only`` stays on, so a checkpoint that asks for any other global (the
way a malicious pickle runs code) is still refused before anything runs.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = ['allow_mmengine_checkpoints']

# HistoryBuffer.__getstate__ saves its class-level table of statistics methods. Pickle
# protocol 2 (torch's default) writes a method such as ``HistoryBuffer.mean`` as
# ``builtins.getattr(HistoryBuffer, 'mean')``; these are the names mmengine registers.
_HISTORY_BUFFER_METHODS = frozenset({'min', 'max', 'current', 'mean'})

# numpy has spelled its C module ``numpy.core.multiarray`` (1.x) and ``numpy._core.multiarray``
# (2.x); a checkpoint keeps the spelling of the numpy that wrote it.
_NUMPY_MULTIARRAY_SPELLINGS = ('numpy._core.multiarray', 'numpy.core.multiarray')

# Numeric dtypes a HistoryBuffer or a logged numpy scalar can carry: float64 and int64 by
# default, the others when a hook logs numpy values or numpy 1.x on Windows (int32 counts).
# Object, string and structured dtypes are left out, so no object arrays.
_NUMERIC_DTYPES = (
    'bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
    'float16', 'float32', 'float64',
)


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: resolves only HistoryBuffer's
    statistics methods, so the real getattr (which reaches any attribute) is never allowed.
    """
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a weights-only load; only '
        f'HistoryBuffer.{{{",".join(sorted(_HISTORY_BUFFER_METHODS))}}} are')


def _mmengine_safe_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """The allowlist entries; a ``(obj, 'module.name')`` pair names obj as a checkpoint does."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    # Taken from numpy's own pickling rather than imported by path, which differs by version.
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    entries: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for module in _NUMPY_MULTIARRAY_SPELLINGS:
        entries += [(reconstruct, f'{module}._reconstruct'), (scalar, f'{module}.scalar')]
    # Never named in a checkpoint, but the unpickler only restores state (BUILD) into
    # instances of allowlisted types, and np.dtype('float64') is a numpy.dtypes.Float64DType.
    entries += sorted({type(np.dtype(name)) for name in _NUMERIC_DTYPES}, key=str)
    return entries


def _torch_release() -> tuple[int, int]:
    # Major and minor only, so that 2.6 pre-releases and local builds count as 2.6.
    major, minor = re.match(r'(\d+)\.(\d+)', str(torch.__version__)).groups()
    return int(major), int(minor)


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` read checkpoints saved by mmengine's Runner.

    Idempotent. A no-op on torch < 2.6, whose ``torch.load`` is not weights-only by default
    (and whose ``add_safe_globals``, where it exists, cannot take the named entries needed
    here), and when mmengine or numpy is not installed.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None or _torch_release() < (2, 6):
        return
    try:
        entries = _mmengine_safe_globals()
    except ImportError:
        return
    # torch keeps the allowlist as a set, so adding the same entries again changes nothing.
    add_safe_globals(entries)
