"""The compile cache: pure tensor functions compiled per input signature, state per kernel.

Why: compiled, a loss and its gradient are one loop over memory; eagerly each term is a pass
of its own (timed by ``tools/benchmark_losses.py``).

``PLUGIN_COMPILE``: unset or ``1`` compiles, ``0`` runs the readable formulas eagerly,
``strict`` compiles and raises where compiling fails (tests: a fallback is an error).
A failure belongs to one kernel: it is retried once in a fresh ``TORCHINDUCTOR_CACHE_DIR``
(a truncated cache entry, a read-only cache directory), and if the retry fails too, that
kernel alone runs eagerly, with one warning through the ``logging`` logger of this module.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ['CompiledKernel', 'compile_enabled', 'kernel_report']

logger = logging.getLogger(__name__)
_KERNELS: weakref.WeakSet[CompiledKernel] = weakref.WeakSet()


def compile_enabled() -> bool:
    """Whether kernels are compiled: ``PLUGIN_COMPILE`` unset, ``1`` or ``strict``.

    Per-kernel failures do not change this; see :attr:`CompiledKernel.failure`.
    """
    return os.environ.get('PLUGIN_COMPILE', '1') != '0'


def _strict() -> bool:
    return os.environ.get('PLUGIN_COMPILE') == 'strict'


def kernel_report() -> dict[str, dict[str, Any]]:
    """Per kernel used in this process: seconds of its first compiled call per signature
    (``compile_seconds``) and why it runs eagerly, if it does (``failure``)."""
    return {k.name: dict(compile_seconds=list(k.compile_seconds), failure=k.failure)
            for k in _KERNELS if k.compile_seconds or k.failure}


class CompiledKernel:
    """A pure tensor function, compiled on first use for each input signature.

    Each signature (device, dtypes, ranks, the values of non-tensor arguments) gets a copy of
    its own: dynamo keeps compiled variants, and its recompile limit, per code object, so one
    shared copy would let dtypes and losses evict each other into eager mode. Anchor counts
    stay symbolic; the last ``static_trailing_dims`` dimensions of the first argument (the
    class dimension) are constants, which lets the compiler unroll the per-row loops.
    """

    def __init__(self, fn: Callable[..., Any], *, static_trailing_dims: int = 1,
                 name: str | None = None) -> None:
        self.fn, self.name = fn, name or fn.__name__
        self.static_trailing_dims = static_trailing_dims
        self.compile_seconds: list[float] = []
        self.failure: str | None = None  # set once compiling failed twice: runs eagerly
        self._compiled: dict[tuple, Callable[..., Any]] = {}
        _KERNELS.add(self)

    def __call__(self, logits: Tensor, *args: Any, **kwargs: Any) -> Any:
        if (self.failure is not None or not compile_enabled() or logits.numel() == 0
                or logits.device.type not in ('cpu', 'cuda') or torch.compiler.is_compiling()):
            return self.fn(logits, *args, **kwargs)
        signature = self._signature(logits, args, kwargs)
        if signature not in self._compiled:
            self._compiled[signature] = _compile(self.fn)
        self._mark_anchor_dims_dynamic(logits, (*args, *kwargs.values()))
        try:
            return self._timed(self._compiled[signature], logits, *args, **kwargs)
        except Exception as err:  # noqa: BLE001 - a compiler failure; input errors re-raise
            out = self.fn(logits, *args, **kwargs)  # a genuine input error raises here
            if _strict():
                raise
            return self._retry(signature, err, logits, args, kwargs, out)

    def _timed(self, compiled: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = compiled(*args, **kwargs)
        if len(self.compile_seconds) < len(self._compiled):
            self.compile_seconds.append(time.perf_counter() - start)
        return out

    def _retry(self, signature: tuple, err: Exception, logits: Tensor, args: tuple,
               kwargs: dict, eager_out: Any) -> Any:
        """Compile once more in a fresh cache directory; else run eagerly from now on."""
        cause = _cause(err)
        cache_dir = os.environ.get('TORCHINDUCTOR_CACHE_DIR')
        fresh_dir = tempfile.mkdtemp(prefix='plugin-inductor-')
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = fresh_dir  # for this compilation only
        try:
            self._compiled[signature] = _compile(self.fn)
            out = self._timed(self._compiled[signature], logits, *args, **kwargs)
        except Exception:  # noqa: BLE001
            self.failure = cause
            logger.warning(
                'plugin: compiling kernel %s failed (%s), also in a fresh cache directory '
                '(%s); it runs eagerly from now on, many times slower. Fix: check the C++ '
                'compiler and the cache directory (%s); set PLUGIN_COMPILE=0 to run eagerly '
                'without this warning.', self.name, cause, fresh_dir, _describe(cache_dir))
            return eager_out
        finally:
            _restore_env('TORCHINDUCTOR_CACHE_DIR', cache_dir)
        logger.warning(
            'plugin: compiling kernel %s failed in the cache directory %s (%s); it compiled in '
            'a fresh one (%s). Fix: delete the broken cache directory, or every new process '
            'compiles this kernel again.', self.name, _describe(cache_dir), cause, fresh_dir)
        return out

    def _signature(self, logits: Tensor, args: tuple, kwargs: dict) -> tuple:
        def kind(a: Any) -> Any:
            return (a.dtype, a.dim()) if isinstance(a, Tensor) else a
        static = logits.shape[logits.dim() - self.static_trailing_dims:]
        return (logits.device.type, logits.dtype, logits.dim(), static,
                tuple(kind(a) for a in args),
                tuple((k, kind(v)) for k, v in sorted(kwargs.items())))

    def _mark_anchor_dims_dynamic(self, logits: Tensor, args: tuple) -> None:
        leading = logits.shape[:logits.dim() - self.static_trailing_dims]
        for tensor in (logits, *args):
            if isinstance(tensor, Tensor):  # targets, weights: the same anchor dimensions
                for dim in range(min(tensor.dim(), len(leading))):
                    if tensor.shape[dim] == leading[dim]:
                        torch._dynamo.maybe_mark_dynamic(tensor, dim)


def _cause(err: BaseException) -> str:
    """The innermost exception, in one line (dynamo wraps the compiler's own error)."""
    while (inner := getattr(err, 'inner_exception', None) or err.__cause__) is not None:
        err = inner
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def _describe(cache_dir: str | None) -> str:
    return cache_dir or "torch's default, /tmp/torchinductor_$USER"


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(_own_code(fn))


def _own_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` (closure included) with a code object of its own."""
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__annotations__ = fn.__annotations__
    return copy
