"""The load jobs benchmarks/child.py runs in a fresh process, one side each: setup here, the returned call measured.

Each job imports only its own side's library, and warms what that library imports lazily, so that neither
import time nor import memory counts as loading. Every loader returns a ready fp32 CPU model in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def clipcore_load(path: str, backend: str = "eager") -> Callable[[], Any]:
    import safetensors.torch  # noqa: F401

    import backends
    import clipcore
    import clipcore.checkpoint

    backends.get(backend)
    return lambda: clipcore.load(path, device="cpu", backend=backend)


def openai_clip_load(path: str) -> Callable[[], Any]:
    """OpenAI's `clip.load(path, device="cpu", jit=False)`: a TorchScript archive or a state dict."""
    from conformance.reference import import_openai_clip

    clip = import_openai_clip()
    return lambda: clip.load(path, device="cpu", jit=False)


def open_clip_load(path: str, model_name: str) -> Callable[[], Any]:
    """open_clip.create_model_and_transforms(model_name, pretrained=path): its loader for files it reads."""
    import open_clip
    import safetensors.torch  # noqa: F401

    return lambda: open_clip.create_model_and_transforms(model_name, pretrained=path, device="cpu")


def fresh_memory(nbytes: int) -> Callable[[], Any]:
    """The floor under any loader that converts dtypes: commit `nbytes` of memory this process never touched,
    the fastest way known (one mmap that the kernel populates at once: no per-page trap, no data written).

    Every first touch of a page costs a fault; on a VM whose host backs memory lazily that dominates a
    conversion, and no loader that puts fp32 weights in new memory can take less than this.
    """
    import mmap

    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return lambda: mmap.mmap(-1, nbytes, flags=flags)


SIDES = {"clipcore": clipcore_load, "openai_clip": openai_clip_load, "open_clip": open_clip_load}
