"""Write a clipcore model as a TorchScript archive shaped like OpenAI's released files.

    model, _ = clipcore.load("model.safetensors")
    clipcore.export_torchscript(model, "model.pt")
    # OpenAI's own loader runs it:  clip.load("model.pt", device="cpu", jit=True)
    # and clipcore reads it back:    clipcore.load("model.pt")

The archive is what OpenAI's `clip.load(jit=True)` expects: the model traced (`torch.jit.trace_module`)
with three methods, `forward(image, text)`, `encode_image(image)` and `encode_text(text)`, and three
integer scalar buffers at the root, `input_resolution`, `context_length` and `vocab_size` (its loader
builds the preprocessing from `input_resolution.item()`). Traced, not scripted: OpenAI's CPU patch reads
every cast's dtype as a constant, which only a trace guarantees. The weights keep their dtypes and
device; the graphs record the model's device and casts, which both OpenAI's loader and clipcore's
torchscript backend retarget on load. The config travels along as `extra/open_clip_config.json`
(OpenCLIP's schema), since the weights alone cannot tell the activation or the head counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from clipcore.errors import ConfigError
from clipcore.towers import CLIP

__all__ = ["export_torchscript", "trace_model"]

CONFIG_FILE = "open_clip_config.json"


def _check(model: object) -> CLIP:
    if not isinstance(model, CLIP):
        raise ConfigError(
            f"export_torchscript takes a clipcore CLIP model, got {type(model).__name__}",
            fix="export a model from clipcore.load(..., backend='eager') or clipcore.create_model",
        )
    return model


def _example_inputs(model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """One image and one token row (start, end-of-text, padding), on the model's device."""
    config, device = model.config, model.logit_scale.device
    image = torch.zeros(1, 3, *config.vision.image_size_hw, device=device)
    tokens = torch.zeros(1, config.text.context_length, dtype=torch.long, device=device)
    tokens[0, 0], tokens[0, 1] = config.text.vocab_size - 2, config.text.vocab_size - 1
    return image, tokens


@contextlib.contextmanager
def _archive_scalars(model: CLIP) -> Iterator[None]:
    """Give `model` OpenAI's three root scalar buffers for the duration (they replace plain int attributes)."""
    config = model.config
    scalars = {
        "input_resolution": max(config.vision.image_size_hw),
        "context_length": config.text.context_length,
        "vocab_size": config.text.vocab_size,
    }
    saved = {name: model.__dict__.pop(name) for name in scalars if name in model.__dict__}
    try:
        for name, value in scalars.items():
            model.register_buffer(name, torch.tensor(value, device=model.logit_scale.device))
        yield
    finally:
        for name in scalars:
            model._buffers.pop(name, None)
        model.__dict__.update(saved)


def trace_model(model: CLIP, archive_scalars: bool = False) -> torch.jit.ScriptModule:
    """`model` traced with forward, encode_image and encode_text, in eval mode, on its device and dtype.

    With `archive_scalars` the traced module also carries OpenAI's root scalars (see the module docstring).
    `model` itself is left as it was.
    """
    model = _check(model)
    image, tokens = _example_inputs(model)
    inputs = {"forward": (image, tokens), "encode_image": (image,), "encode_text": (tokens,)}
    training = model.training
    scalars = _archive_scalars(model) if archive_scalars else contextlib.nullcontext()
    try:
        model.eval()
        with scalars, torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            return torch.jit.trace_module(model, inputs, check_trace=False)
    finally:
        model.train(training)


def export_torchscript(model: CLIP, path: str | os.PathLike) -> Path:
    """Write `model` to `path` as an OpenAI-style TorchScript archive (see the module docstring)."""
    model = _check(model)
    traced = trace_model(model, archive_scalars=True)
    config = json.dumps({"model_cfg": model.config.to_openclip()}, indent=2)
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        torch.jit.save(traced, str(path), _extra_files={CONFIG_FILE: config})
    return path
