"""The backward of a row gather that recycles its dense gradient buffer.

Why: a fresh zero-filled dense gradient every step is a full-size write that the mining
otherwise pays for (timed by ``tools/benchmark_mining.py``).
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ['RowGather']


class RowGather:
    """``x[rows]`` of a (N, ...) tensor for unique ``rows``; its backward recycles the dense
    gradient.

    The gradient of a gather is zero outside the gathered rows. Zero-filling a fresh (N, K)
    buffer every step costs a page fault per 4 KiB on CPU: for SSD300's 32 x 8732 x 81 scores,
    more than ranking them. So a CPU gradient buffer that nobody holds any more and that
    nobody wrote since (its storage's use count and its version counter tell) is reused: the
    rows written last time are zeroed and the new ones written. Values are those of a fresh
    zero-filled buffer. One instance serves one call site, e.g. a head's scores; it keeps
    its last buffer between steps.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None  # an alias: shares storage and version counter
        self._rows: Tensor | None = None
        self._version = -1

    def __call__(self, x: Tensor, rows: Tensor) -> Tensor:
        """Args: x (N, ...) tensor; rows (M,) int64, unique indices into dim 0.
        Returns: (M, ...) ``x[rows]``."""
        return _GatherRowsFunction.apply(x, rows, self)

    @property
    def held_bytes(self) -> int:
        """Memory this gather keeps between steps: its last gradient buffer."""
        return 0 if self._buffer is None else self._buffer.untyped_storage().nbytes()

    def dense_gradient(self, grad_rows: Tensor, rows: Tensor, shape: torch.Size) -> Tensor:
        """The (N, ...) gradient of ``x`` from the (M, ...) gradient of ``x[rows]``."""
        buffer = self._recycled(shape, grad_rows)
        if buffer is None:
            buffer = grad_rows.new_zeros(shape)
        else:
            buffer.index_fill_(0, self._rows, 0)
        buffer.index_copy_(0, rows, grad_rows)
        if buffer.device.type == 'cpu':
            self._buffer, self._rows = buffer.detach(), rows.clone()
            self._version = buffer._version
        return buffer

    def _recycled(self, shape: torch.Size, like: Tensor) -> Tensor | None:
        old = self._buffer
        if (old is None or old.shape != shape or old.dtype != like.dtype
                or old.device != like.device or old._version != self._version):
            return None
        holders = _storage_holders(old)
        if holders is None or holders != _sole_holder_count():
            return None
        return old.detach()  # a new tensor, so that autograd may keep it as .grad uncopied


class _GatherRowsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, rows: Tensor, gather: RowGather) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(rows)
        ctx.shape, ctx.gather = x.shape, gather
        return x.index_select(0, rows)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows: Tensor) -> tuple:  # type: ignore[override]
        (rows,) = ctx.saved_tensors
        return ctx.gather.dense_gradient(grad_rows.contiguous(), rows, ctx.shape), None, None


def _storage_holders(tensor: Tensor) -> int | None:
    """References to the tensor's storage (None where torch cannot say)."""
    use_count = getattr(torch._C, '_storage_Use_Count', None)
    return None if use_count is None else use_count(tensor.untyped_storage()._cdata)


@functools.cache
def _sole_holder_count() -> int | None:
    """What :func:`_storage_holders` reads for a tensor whose storage nobody else holds,
    measured once (the count includes the storage object that reading it creates)."""
    return _storage_holders(torch.empty(1).detach())
