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
from clipcore.pages import PageCommitter
from clipcore.threads import one_torch_thread
from clipcore.towers import CLIP, build_model
from clipcore.towers.foreign import ForeignTower, settle_constants
from spec import ClipConfig, check_shapes, shapes_from, shapes_of
from spec.infer import IGNORED_KEYS

__all__ = ["DtypeRule", "assemble", "assign"]

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
    model = None if not foreign else build_model(config, device="meta")
    expected = check_model_shapes(model, checkpoint.shapes()) if foreign else shapes_of(config)
    wanted = {key: rule(key) for key in expected}
    # Tensors that must be copied into new CPU memory get it now, so that its pages can be committed in the
    # background (clipcore/pages.py) while the model is built and the file is read.
    fresh = {} if device.type != "cpu" else {
        key: torch.empty(expected[key], dtype=checkpoint.dtype_of(key, target))
        for key, target in wanted.items() if not checkpoint.maps(key, target)
    }
    order = {key: i for i, key in enumerate(fresh)}
    state = {}
    # One torch thread for the copies: they are bound by memory, and a second thread writing fresh pages
    # contends for the same kernel lock (fp16 ViT-B/32 -> fp32: 0.33 s on one thread, 0.9 s on two).
    with PageCommitter(list(fresh.values())) as pages, one_torch_thread(process_wide_ok=True):
        if model is None:
            model = build_model(config, device="meta")
        for key, target in wanted.items():
            if key in fresh:
                pages.ready(order[key])
                state[key] = checkpoint.get(key, target, out=fresh[key])
            else:
                tensor = checkpoint.get(key, target)
                state[key] = tensor if tensor.device == device else tensor.to(device)
    if foreign:  # their libraries may hook load_state_dict
        model.load_state_dict(state, strict=True, assign=True)
    else:
        assign(model, state)
    settle_constants(model, device, None if callable(dtype) else dtype)
    return model  # in eval mode, as build_model made it


def assign(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`load_state_dict(state, strict=True, assign=True)` for a model whose keys and shapes were checked
    against `state` already: the same result without its per-module machinery (a third of loading RN50).
    Writes the modules' parameter and buffer tables directly, as `nn.Module.register_parameter` does."""
    modules = dict(model.named_modules())
    for key, tensor in state.items():
        owner, _, name = key.rpartition(".")
        module = modules[owner]
        old = module._parameters.get(name)
        if old is not None:
            module._parameters[name] = torch.nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            module._buffers[name] = tensor  # the keys were checked: the others are buffers
    left = next((f"{owner}.{name}".lstrip(".") for owner, module in modules.items()
                 for name, t in (*module._parameters.items(), *module._buffers.items())
                 if t is not None and t.is_meta), None)
    if left is not None:
        raise ShapeError(f"{left!r} was given no tensor", fix="the checkpoint and the model's keys disagree")


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
