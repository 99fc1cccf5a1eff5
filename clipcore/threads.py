"""Running a stretch of torch work on one intra-op thread, and whether that setting is per thread."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

__all__ = ["one_torch_thread", "threads_are_per_thread"]


@functools.cache
def threads_are_per_thread() -> bool:
    # With ATen's OpenMP backend, set_num_threads sets the calling thread's OpenMP team size.
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextlib.contextmanager
def one_torch_thread(process_wide_ok: bool = False) -> Iterator[None]:
    """Run the calling thread's torch ops on one intra-op thread for the duration; the count is restored.

    With OpenMP the setting is per thread. With another parallel backend it is process-wide, so it is only
    changed there when the caller accepts that (`process_wide_ok`): other threads' torch work then also runs
    on one thread until the block ends.
    """
    before = torch.get_num_threads()
    if before == 1 or not (process_wide_ok or threads_are_per_thread()):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
