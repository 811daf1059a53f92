"""Recycled work tensors for the sampling loop (CPU only).

PyTorch's CPU allocator does not cache: every state-sized temporary of a step (the new state, a data prediction)
is fresh memory, and once a few megabyte-sized blocks are alive glibc hands them back to the kernel and the next
ones page-fault on first touch. For a cheap model that costs more than the arithmetic itself (benchmark:
``python -m analysis.benchmark``). A :class:`BufferPool` hands out tensors of earlier steps that nobody refers to
any more, so a long run touches the same few blocks.

A buffer counts as free only when the pool holds the sole Python reference to it *and* no other tensor (a view,
a ``detach()``) shares its storage, so a state kept by the caller (``return_intermediates``, a model that stores
its input) is never overwritten. The Python reference count of a free buffer is measured once at import (it
differs between Python versions); if an extra reference does not show in it, or the private
``torch._C._storage_Use_Count`` is missing, nothing is ever recycled. The pool is also bypassed (``take``
returns ``None``) off the CPU, where the caching allocator already recycles, and whenever autograd is recording,
since ``out=`` operations are not differentiable.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["BufferPool"]

try:
    _storage_use_count = torch._C._storage_Use_Count  # number of tensors sharing a storage
except AttributeError:  # pragma: no cover - very old or future torch without it: never recycle
    _storage_use_count = None


def _references(buffers: list, i: int) -> int:
    """``sys.getrefcount`` of ``buffers[i]`` as seen from here (the list, the local name, the call argument)."""
    buf = buffers[i]
    return sys.getrefcount(buf)


def _free_refcount() -> int | None:
    """What :func:`_references` reports for a tensor that only a list refers to, measured on this interpreter
    (reference counting details differ between Python versions), or ``None`` if one more reference does not show
    in the count, in which case the pool never recycles."""
    free = _references([torch.empty(1)], 0)
    held = torch.empty(1)
    return free if _references([held], 0) == free + 1 else None


_FREE_REFCOUNT = _free_refcount()


class BufferPool:
    """Hands out state-sized work tensors, recycling those of earlier steps that are no longer referenced.

    Parameters
    ----------
    capacity : int
        Most tensors kept (a multistep history of order k holds k of them, plus the state and the new state).
    """

    def __init__(self, capacity: int = 12):
        self.capacity = int(capacity)
        self._buffers: list[torch.Tensor] = []

    def take(self, like: torch.Tensor) -> torch.Tensor | None:
        """An uninitialised tensor with ``like``'s shape, dtype and device that no one else refers to, or
        ``None`` where the pool does not apply (non-CPU tensors, autograd enabled)."""
        if (_storage_use_count is None or _FREE_REFCOUNT is None or like.device.type != "cpu"
                or torch.is_grad_enabled()):
            return None
        buffers = self._buffers
        # Most recently handed out first: the free buffer most likely still in cache.
        for i in range(len(buffers) - 1, -1, -1):
            if _references(buffers, i) != _FREE_REFCOUNT:
                continue  # someone else holds this tensor
            buf = buffers[i]
            if (buf.shape == like.shape and buf.dtype == like.dtype
                    and _storage_use_count(buf.untyped_storage()._cdata) == 2):  # buf + the temporary storage
                buffers.append(buffers.pop(i))
                return buf
        buf = torch.empty_like(like, memory_format=torch.contiguous_format)
        if len(buffers) < self.capacity:
            buffers.append(buf)
        return buf
