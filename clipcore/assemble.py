"""Config + checkpoint -> a model with the checkpoint's weights, built without random initialisation.

The model is built on the meta device (no memory, no init), then every tensor is read from the checkpoint
one at a time, converted to its target dtype and moved to the target device, and assigned in place of the
meta tensor. Peak memory therefore stays near the finished model's size plus one tensor; a safetensors file
already in the target dtype and on the CPU is used in place, memory-mapped, without a copy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from clipcore.checkpoint import Checkpoint
from clipcore.towers import CLIP, build_model
from spec import ClipConfig, check_shapes, shapes_of

__all__ = ["DtypeRule", "assemble"]

# Which dtype a floating-point tensor gets, by state-dict key (None keeps the checkpoint's dtype).
DtypeRule = Callable[[str], torch.dtype | None]


def assemble(
    config: ClipConfig,
    checkpoint: Checkpoint,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | DtypeRule | None = torch.float32,
) -> CLIP:
    """Build `config`'s model and give it `checkpoint`'s tensors (keys and shapes must match exactly)."""
    check_shapes(config, checkpoint.shapes())
    rule = dtype if callable(dtype) else (lambda key: dtype)
    device = torch.device(device)
    model = build_model(config, device="meta")
    state = {}
    for key in shapes_of(config):
        tensor = checkpoint.get(key, rule(key))
        state[key] = tensor if tensor.device == device else tensor.to(device)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
