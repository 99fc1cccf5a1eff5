"""The public facade's `load` (like OpenAI's `clip.load`); OpenCLIP's entry points are in factory.py.

    model, preprocess = clipcore.load("ViT-B/32")            # a released name, a URL or a local file
    model, preprocess = clipcore.load("model.safetensors", backend="cuda-fp16")

A load resolves the name (downloading and verifying it if needed), opens the file without executing
anything, infers the architecture from the tensor shapes (plus whatever facts the file's own metadata
gives), builds clipcore's modules on the chosen backend and returns them with the matching preprocessing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from clipcore import provenance
from clipcore.checkpoint import Checkpoint, open_checkpoint
from clipcore.download import LOCAL_MODELS, resolve
from clipcore.errors import BackendError, ConfigError
from clipcore.preprocess import Preprocess
from spec import ClipConfig, infer_config
from spec.checkpoints import available_models as released_models

__all__ = ["available_models", "default_device", "load"]

log = logging.getLogger("clipcore")


def available_models() -> list[str]:
    """The names `load` takes: OpenAI's released checkpoints (as `clip.available_models()`), then the bundled ones."""
    return released_models() + list(LOCAL_MODELS)


def default_device() -> torch.device:
    """CUDA when it is available, else the CPU (decided at call time, not import time)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    backend: str = "eager",
    download_root: str | os.PathLike | None = None,
    **kwargs: Any,
) -> tuple[torch.nn.Module, Preprocess]:
    """Load a CLIP checkpoint: `(model, preprocess)`, like `clip.load`.

    `name_or_path`: one of `available_models()`, an http(s) URL, or a local file or model folder in any
    supported format. `backend`: how the model runs, one of `backends.available()` ("eager", "torchscript",
    "cuda-fp16", "cuda-bf16"). The keyword arguments are of two kinds:
    - config overrides, named after ClipConfig fields: they set what the shapes cannot tell
      (`quick_gelu=True`, `vision={"head_width": 80}`, `text={"heads": 16}`); the result is on
      `model.config`, and the fields that were assumed rather than known are listed in
      `model.config.assumed` and logged;
    - the chosen backend's options (`precision=` for eager, `trust_archive=`/`mode=` for torchscript,
      `compile=`/`channels_last=`/`trim_text=` for the CUDA backends).
    A keyword that is neither raises an error naming it and what is accepted.
    """
    import backends  # the facade sits above the backends; imported here so `import clipcore` stays cheap

    chosen = backends.get(backend)
    overrides, options = split_backend_options(chosen, kwargs)
    device = torch.device(device) if device is not None else default_device()
    path = resolve(name_or_path, root=download_root)
    name = name_or_path if isinstance(name_or_path, str) else None
    with open_checkpoint(path) as checkpoint:
        # The architecture always comes from clipcore's own reader, before a backend may run anything.
        config = infer_checkpoint_config(checkpoint, name, **overrides)
        model = chosen.factory(config, checkpoint, device, **options)
    return model, preprocess_for(config)


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(ClipConfig)) - {"assumed"}


def split_backend_options(chosen: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config overrides, backend options) from `load`'s keyword arguments; an unknown keyword is an error."""
    import backends

    overrides, options = {}, {}
    accepted = chosen.options
    for key, value in kwargs.items():
        if key in accepted:
            options[key] = value
        elif key in CONFIG_FIELDS:
            overrides[key] = value
        else:
            accepted_text = (f"backend {chosen.name!r} takes {list(accepted) or 'no options'}; "
                             f"config overrides are {sorted(CONFIG_FIELDS)}")
            others = [name for name, b in backends.registered().items() if key in b.options]
            if others:
                raise BackendError(f"backend {chosen.name!r} has no option {key!r} (backends {others} do)",
                                   fix=accepted_text)
            raise ConfigError(f"unknown keyword argument {key!r}", fix=accepted_text)
    return overrides, options


def infer_checkpoint_config(checkpoint: Checkpoint, name: str | None = None, **overrides: Any) -> ClipConfig:
    """The architecture of an opened checkpoint: its shapes, its metadata's facts, then the caller's overrides."""
    shapes = checkpoint.shapes()
    known, source = provenance.facts(checkpoint.metadata, shapes, name)
    config = infer_config(shapes, **provenance.merge_overrides(known, overrides))
    _report(checkpoint.path, config, source)
    return config


def _report(path: Path, config: ClipConfig, source: str | None) -> None:
    v, t = config.vision, config.text
    tower = f"ViT {v.width}x{v.layers}/{v.patch_size}" if v.kind == "vit" else f"ModifiedResNet {v.layers}"
    summary = (
        f"{path.name}: {tower} at {v.image_size}px, text {t.width}x{t.layers}, embed {config.embed_dim}, "
        f"{'QuickGELU' if config.quick_gelu else 'GELU'}" + (f" (facts from {source})" if source else "")
    )
    if not config.assumed:
        log.info(summary)
        return
    guessed = ", ".join(f"{a}={_field(config, a)!r}" for a in config.assumed)
    message = f"{summary}; not in the file, assumed: {guessed} (pass overrides to change)"
    # The activation is the guess that most often silently costs accuracy: say it out loud.
    (log.warning if "quick_gelu" in config.assumed else log.info)(message)


def _field(config: ClipConfig, path: str) -> Any:
    obj: Any = config
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def preprocess_for(config: ClipConfig, **options: Any) -> Preprocess:
    """OpenAI's preprocessing (bicubic resize of the short side, centre crop, OpenAI mean/std) at the model's size."""
    return Preprocess(config.vision.image_size, **options)

