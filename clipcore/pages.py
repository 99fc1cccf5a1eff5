"""Committing fresh memory ahead of the thread that will fill it.

A loader that converts a checkpoint (fp16 file -> fp32 model) writes every byte of the model into memory the
process has never touched, and each first write of a 4 KiB page is a page fault. On virtual machines whose
host backs guest memory lazily, those faults dominate: ~0.33 s per GB here, 0.2 s of a 0.35 s ViT-B/32 load,
while the conversion itself is ~0.03 s. Faulting from two threads at once does not help (the host serialises
them, and the copies contend), but committing the pages in a background thread with one
`madvise(MADV_POPULATE_WRITE)` per tensor lets everything else the loader does (reading the file, building
the model, the copies themselves) run meanwhile instead of after.

This is a hint only: where the call is unavailable (not Linux, or a kernel before 5.14) the writer simply
faults the pages itself, as it would have anyway.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

import torch

__all__ = ["PageCommitter"]

_MADV_POPULATE_WRITE = 23  # linux/mman.h, Linux >= 5.14
_PAGE = 4096


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _madvise()


def populate(tensor: torch.Tensor) -> bool:
    """Fault in every page of `tensor`'s storage, writable, now (ctypes drops the GIL meanwhile)."""
    storage = tensor.untyped_storage()
    if _MADVISE is None or storage.device.type != "cpu" or storage.nbytes() < _PAGE:
        return False
    start = storage.data_ptr() & ~(_PAGE - 1)  # whole pages: a neighbour's page is only faulted in, not changed
    end = storage.data_ptr() + storage.nbytes()
    return _MADVISE(start, end - start, _MADV_POPULATE_WRITE) == 0


class PageCommitter:
    """Commits the pages of `tensors`, in order, on a background thread.

    `ready(i)` blocks until tensor i's pages are committed, so that the writer then copies into memory that
    no longer faults. Use as a context manager; leaving it stops the thread and waits for it.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self._tensors = tensors
        self._done = 0 if _MADVISE is not None else len(tensors)  # without madvise there is nothing to wait for
        self._stop = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="clipcore-pages", daemon=True)

    def _run(self) -> None:
        try:
            for i, tensor in enumerate(self._tensors):
                if self._stop:
                    break
                populate(tensor)
                with self._changed:
                    self._done = i + 1
                    self._changed.notify_all()
        finally:  # never leave the writer waiting, whatever happened here
            with self._changed:
                self._done = len(self._tensors)
                self._changed.notify_all()

    def ready(self, i: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._done > i)

    def __enter__(self) -> PageCommitter:
        if self._done < len(self._tensors):
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop = True
        if self._thread.is_alive():
            self._thread.join()
