"""A checkpoint tensor whose shape and dtype are known up front and whose bytes are read on demand."""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass

import torch

from clipcore.checkpoint.files import RandomAccessFile

SCRATCH_MIN_BYTES = 1 << 20


class Entry:
    """One tensor of a checkpoint: `read(dtype)` returns a new tensor in exactly `dtype`;
    `read_into(out)` writes the values (converted to out's dtype) into an existing tensor of its shape."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def read(self, dtype: torch.dtype) -> torch.Tensor:
        out = torch.empty(self.shape, dtype=dtype)
        self.read_into(out)
        return out

    def read_into(self, out: torch.Tensor) -> None:
        out.copy_(self.read(self.dtype))

    def maps(self, dtype: torch.dtype) -> bool:
        """Whether `read(dtype)` returns a view of a memory-mapped file (no new memory) rather than a copy."""
        return False


def extent(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """How many storage elements a strided view touches, from its first element to its last."""
    if 0 in shape:
        return 0
    return 1 + sum((size - 1) * step for size, step in zip(shape, stride, strict=True))


def scratch(nbytes: int) -> torch.Tensor:
    """A temporary byte buffer. Large ones get their own anonymous mapping, returned to the system the moment
    they are dropped: from the heap, the holes they leave between the tensors a loader keeps are not."""
    if nbytes < SCRATCH_MIN_BYTES:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.frombuffer(mmap.mmap(-1, nbytes), dtype=torch.uint8)


@dataclass(eq=False)
class StoredTensor(Entry):
    """A strided view whose first element lies at byte `offset` of `file` (raw, in file byte order).

    Only the bytes the view spans are read, so a small view into a large shared storage costs its own size,
    and the result never keeps a larger buffer alive than the tensor needs. Bytes that already are the result
    are read straight into it; bytes that are converted or compacted are read from a memory map whose pages
    are released right after (or, unaligned or byte-swapped, through a scratch buffer).
    """

    file: RandomAccessFile
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    what: str
    byteswap: bool = False

    def _view(self, raw: torch.Tensor) -> torch.Tensor:
        self.file.read_into(self.offset, raw, self.what)
        if self.byteswap and self.dtype.itemsize > 1:
            raw = raw.view(-1, self.dtype.itemsize).flip(1).contiguous().view(-1)
        return raw.view(self.dtype).as_strided(self.shape, self.stride)

    def read(self, dtype: torch.dtype) -> torch.Tensor:
        span = extent(self.shape, self.stride)
        if span == 0:
            return torch.empty_strided(self.shape, self.stride, dtype=dtype)
        if dtype == self.dtype and span <= math.prod(self.shape):  # dense (any order) or broadcast: as saved
            return self._view(torch.empty(span * self.dtype.itemsize, dtype=torch.uint8))
        return super().read(dtype)  # converted or compacted: via read_into

    def read_into(self, out: torch.Tensor) -> None:
        span = extent(self.shape, self.stride)
        if not span:
            return
        nbytes = span * self.dtype.itemsize
        if not self.byteswap and self.offset % self.dtype.itemsize == 0:  # aligned: convert from the map
            with self.file.mapped(self.offset, nbytes, self.what) as raw:
                if raw is not None:
                    out.copy_(raw.view(self.dtype).as_strided(self.shape, self.stride))
                    return
        out.copy_(self._view(scratch(nbytes)))
