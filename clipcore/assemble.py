"""Config + checkpoint -> a model with the checkpoint's weights, built without random initialisation.

The model is built on the meta device (no memory, no init), then every tensor is read from the checkpoint
one at a time, converted to its target dtype and moved to the target device, and assigned in place of the
meta tensor. Peak memory therefore stays near the finished model's size plus one tensor; a safetensors file
already in the target dtype and on the CPU is used in place, memory-mapped, without a copy.

Towers from timm or transformers have no shapes in `spec` (their libraries define them): the model built on
meta is the expected layout, and the buffers those libraries compute at build time are put on the device
after the assignment.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from clipcore.checkpoint import Checkpoint
from clipcore.errors import ShapeError
from clipcore.threads import one_torch_thread
from clipcore.towers import CLIP, build_model
from clipcore.towers.foreign import ForeignTower, settle_constants
from spec import ClipConfig, check_shapes, shapes_from, shapes_of
from spec.infer import IGNORED_KEYS

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
    foreign = config.vision.kind == "timm" or config.text.kind == "hf"
    if not foreign:
        check_shapes(config, checkpoint.shapes())
    rule = dtype if callable(dtype) else (lambda key: dtype)
    device = torch.device(device)
    model = build_model(config, device="meta")
    expected = check_model_shapes(model, checkpoint.shapes()) if foreign else shapes_of(config)
    state = {}
    # The converting copies are bound by first-touch page faults into fresh memory; two threads faulting into
    # one address space contend for the kernel's lock on it (fp16 ViT-B/32 -> fp32: 0.33 s on one thread,
    # 0.9 s on two, 2-core machine).
    with one_torch_thread(process_wide_ok=True):
        for key in expected:
            tensor = checkpoint.get(key, rule(key))
            state[key] = tensor if tensor.device == device else tensor.to(device)
    model.load_state_dict(state, strict=True, assign=True)
    settle_constants(model, device, None if callable(dtype) else dtype)
    return model.eval()


def check_model_shapes(model: torch.nn.Module, shapes: dict) -> dict[str, tuple[int, ...]]:
    """Compare a checkpoint's shapes with a built model's state dict; return the model's (key -> shape).

    A checkpoint may also hold the library-computed buffers (older transformers saved RoBERTa's
    `position_ids`); those are ignored, as OpenCLIP ignores them.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    computed = {
        f"{prefix}.{name}"
        for prefix, module in model.named_children()
        if isinstance(module, ForeignTower)
        for name in module.constant_names()
    }
    found = {k: v for k, v in shapes_from(shapes).items() if k not in IGNORED_KEYS and k not in computed}
    missing = [k for k in expected if k not in found]
    if missing:
        raise ShapeError(
            f"key {missing[0]!r} is missing (expected shape {expected[missing[0]]})"
            + (f", and {len(missing) - 1} more" if len(missing) > 1 else ""),
            fix="the file is incomplete, or does not match the config it is loaded with",
        )
    unexpected = [k for k in found if k not in expected]
    if unexpected:
        raise ShapeError(
            f"key {unexpected[0]!r} (shape {found[unexpected[0]]}) is not part of the model's architecture"
            + (f", nor are {len(unexpected) - 1} more" if len(unexpected) > 1 else ""),
            fix="the file belongs to another architecture, or a config override changed the model",
        )
    for key, shape in expected.items():
        if found[key] != shape:
            raise ShapeError(f"key {key!r} has shape {found[key]}, expected {shape}", fix="check the config")
    return expected
