"""Reading a checkpoint file at explicit offsets, with every short read or I/O failure a CheckpointError."""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from clipcore.errors import CheckpointError

DAMAGED_FIX = "the file is damaged, truncated or not a checkpoint: download or save it again"


def damaged(path: Path | str, what: str, fix: str = DAMAGED_FIX) -> CheckpointError:
    """The one way readers report a malformed file: the file, what is wrong, what to do."""
    return CheckpointError(f"{path}: {what}", fix=fix)


class RandomAccessFile:
    """A read-only file read at given offsets. Reads never go past the size seen at open time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
            self.size = os.fstat(self._file.fileno()).st_size
        except OSError as exc:
            raise CheckpointError(
                f"cannot open checkpoint {path}: {exc.strerror or exc}",
                fix="check that the path names a readable file",
            ) from None
        self._lock = threading.Lock()  # seek + read must not interleave between threads
        self._map: mmap.mmap | None = None
        self._map_tried = False
        self._views_map: mmap.mmap | None = None  # see view(): never released page by page

    def _check_range(self, offset: int, n: int, what: str) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise damaged(self.path, f"{what} (bytes {offset}..{offset + n}) runs past the end of the file "
                                     f"({self.size} bytes)")

    def read(self, offset: int, n: int, what: str = "a record") -> bytes:
        """Exactly `n` bytes at `offset` (for headers and pickles; tensors use read_into)."""
        self._check_range(offset, n, what)
        out = bytearray(n)
        self._readinto(offset, memoryview(out), what)
        return bytes(out)

    def read_into(self, offset: int, out: torch.Tensor, what: str = "tensor data") -> None:
        """Fill the contiguous uint8 CPU tensor `out` from the file at `offset`."""
        n = out.numel()
        self._check_range(offset, n, what)
        if n:
            self._readinto(offset, memoryview(out.numpy()).cast("B"), what)

    def _readinto(self, offset: int, view: memoryview, what: str) -> None:
        done = 0
        with self._lock:
            if self._file.closed:
                raise CheckpointError(f"{self.path}: the checkpoint was closed", fix="read tensors before close()")
            try:
                self._file.seek(offset)
                while done < len(view):
                    got = self._file.readinto(view[done:])
                    if not got:
                        break
                    done += got
            except OSError as exc:
                raise damaged(self.path, f"reading {what} failed: {exc.strerror or exc}") from None
        if done < len(view):
            raise damaged(self.path, f"{what} is cut short: the file ended after {offset + done} bytes")

    @contextlib.contextmanager
    def mapped(self, offset: int, n: int, what: str) -> Iterator[torch.Tensor | None]:
        """A read-only view of `n` file bytes through a memory map (None where mapping is unavailable).

        For bytes that are only read to be converted: the page cache is read in place (no copy into a fresh
        buffer), and the pages are dropped from this process when the block ends, so converting a whole
        file never accumulates the source in memory. The view must not outlive the block.
        """
        self._check_range(offset, n, what)
        mapping = self._mapping()
        if mapping is None:
            yield None
            return
        if os.fstat(self._file.fileno()).st_size < offset + n:  # touching a page past a shrunk file is SIGBUS
            raise damaged(self.path, f"{what} is cut short: the file shrank after it was opened")
        try:
            yield torch.frombuffer(mapping, dtype=torch.uint8, offset=offset, count=n)
        finally:
            start = offset - offset % mmap.PAGESIZE
            mapping.madvise(mmap.MADV_DONTNEED, start, offset + n - start)

    def view(self, offset: int, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> torch.Tensor | None:
        """The dense tensor of `shape` and `dtype` stored at `offset`, as a view of the file: no copy.

        The view is backed by a copy-on-write map of the whole file, shared by all views and alive as long as
        any is (writing to a view never changes the file). None where the file cannot be mapped or `offset`
        is not a multiple of the dtype's size (the caller then reads a copy).
        """
        count = math.prod(shape)
        self._check_range(offset, count * dtype.itemsize, what)
        if not count or offset % dtype.itemsize:
            return None
        with self._lock:
            if self._file.closed:
                raise CheckpointError(f"{self.path}: the checkpoint was closed", fix="read tensors before close()")
            if self._views_map is None and self.size:
                with contextlib.suppress(OSError, ValueError):
                    self._views_map = mmap.mmap(self._file.fileno(), self.size, access=mmap.ACCESS_COPY)
            mapping = self._views_map
        if mapping is None:
            return None
        try:
            return torch.frombuffer(mapping, dtype=dtype, count=count, offset=offset).view(shape)
        except (TypeError, ValueError, RuntimeError):  # a dtype this torch cannot view a buffer as
            return None

    def _mapping(self) -> mmap.mmap | None:
        with self._lock:
            if self._file.closed:
                raise CheckpointError(f"{self.path}: the checkpoint was closed", fix="read tensors before close()")
            if not self._map_tried:
                self._map_tried = True
                if self.size and hasattr(mmap, "MADV_DONTNEED"):
                    with contextlib.suppress(OSError, ValueError):  # e.g. a pipe or a file system without mmap
                        # copy-on-write, never written: a writable buffer keeps torch.frombuffer quiet
                        self._map = mmap.mmap(self._file.fileno(), self.size, access=mmap.ACCESS_COPY)
            return self._map

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                with contextlib.suppress(BufferError):
                    self._map.close()
            # Never closed here: torch.frombuffer keeps the map object alive, but not locked, so closing it
            # would unmap memory that views still use. It is unmapped when the last view is gone.
            self._views_map = None
            self._file.close()
