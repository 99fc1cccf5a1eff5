"""The `eager` backend: clipcore's own modules in plain PyTorch, the reference numerics on any device.

    model, preprocess = clipcore.load(path)                                  # precision="auto"
    model, preprocess = clipcore.load(path, device="cuda", precision="fp32")

`precision`:
- "auto" (default): what the reference does. On a CUDA device, a checkpoint stored in float16 (every
  OpenAI release) runs in OpenAI's mixed precision, as `clip.load(..., device="cuda")` does; anything else
  runs in float32 (on the CPU always, as OpenAI's loader calls `model.float()` there; and for float32 or
  bfloat16 files, as OpenCLIP's default precision does).
- "fp16": OpenAI's mixed precision on any device: convolutions, linear layers, attention projections and
  the output projections in float16; LayerNorm/BatchNorm tensors, embeddings and the logit scale in float32
  (see backends/precision.py); LayerNorm computes in float32.
- "fp32": every floating-point tensor in float32.
"""

from __future__ import annotations

import torch

import backends
from backends.model import EagerCLIP, adopt
from backends.precision import half_keys
from clipcore.assemble import assemble
from clipcore.checkpoint import Checkpoint
from clipcore.errors import BackendError
from spec import ClipConfig

__all__ = ["PRECISIONS", "build"]

PRECISIONS = ("auto", "fp32", "fp16")


def build(
    config: ClipConfig, checkpoint: Checkpoint, device: str | torch.device = "cpu", *, precision: str = "auto"
) -> EagerCLIP:
    """`config`'s model with `checkpoint`'s weights on `device`, in the precision chosen as described above."""
    if precision not in PRECISIONS:
        raise BackendError(f"eager: unknown precision {precision!r}", fix=f"use one of {list(PRECISIONS)}")
    device = torch.device(device)
    # half_keys builds a second (meta) model: only ask when half precision is possible at all.
    wants_half = precision == "fp16" or (precision == "auto" and device.type == "cuda")
    half = half_keys(config) if wants_half else frozenset()
    if precision == "auto" and half:
        stored = checkpoint.dtypes()
        if not all(stored.get(key) == torch.float16 for key in half):
            half = frozenset()
    model = assemble(config, checkpoint, device, lambda key: torch.float16 if key in half else torch.float32)
    return adopt(model, EagerCLIP)


backends.register("eager", build, description="clipcore's modules in PyTorch eager mode (float32; OpenAI's fp16 "
                                              "layout on CUDA for float16 checkpoints)")
