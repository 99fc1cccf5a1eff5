"""The common interface every backend's model has, on top of what clipcore's CLIP already offers.

clipcore's `CLIP` has `encode_image`, `encode_text`, `forward`, `config` and `dtype`. A backend adds
`device` (where the weights live) and `encode_image_uint8`, the fast input path for
`Preprocess.batch(..., output="uint8")`:

    batch = preprocess.batch(files, output="uint8")          # (N, H, W, 3) uint8 on the CPU: 4x fewer bytes
    features = model.encode_image_uint8(batch)                # copied (pinned, asynchronous) and normalised
                                                              # on the model's device, then encoded

The values are those of the float32 path (`normalize_uint8` does the same float32 arithmetic as
`Preprocess`). Backends give their model these methods by making it an instance of a subclass of its class
(`adopt`), so the model stays a CLIP: same state-dict keys, same modules, `isinstance(model, CLIP)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from clipcore.preprocess import OPENAI_MEAN, OPENAI_STD, normalize_uint8
from clipcore.towers import CLIP

__all__ = ["ClipModel", "EagerCLIP", "adopt", "uint8_to_input"]


def uint8_to_input(
    batch: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    mean: Sequence[float] = OPENAI_MEAN,
    std: Sequence[float] = OPENAI_STD,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB on the host -> normalised (N, 3, H, W) images in `dtype` on `device`.

    To a CUDA device the bytes go from pinned memory without blocking the host (torch's caching host
    allocator recycles the pinned buffers and keeps them alive until the copy is done); the division,
    mean and std are applied there in float32, then the result is cast once.
    """
    if isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8 and batch.device != device:
        if device.type == "cuda" and batch.device.type == "cpu":
            batch = batch if batch.is_pinned() else batch.pin_memory()
            batch = batch.to(device, non_blocking=True)
        else:
            batch = batch.to(device)
    # Checks the tensor (an ImageError names what it got); mean and std are made where the bytes are.
    images = normalize_uint8(batch, mean, std, device=batch.device if isinstance(batch, torch.Tensor) else None)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(dtype=dtype, memory_format=memory_format)


class ClipModel:
    """Mixin for a clipcore CLIP as a backend returns it: adds `device` and `encode_image_uint8`."""

    # TorchScript compiles a module's properties; `device` is Python-side only (scripting still works).
    __jit_unused_properties__: ClassVar[list[str]] = ["device"]
    # Whether the image tower wants channels_last input (the CUDA backends' ResNets).
    input_channels_last: bool = False

    @property
    def device(self) -> torch.device:
        """Where the weights are (the root logit scale sits with them)."""
        return self.logit_scale.device

    def encode_image_uint8(
        self,
        batch: torch.Tensor,
        normalize: bool = False,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
    ) -> torch.Tensor:
        """`encode_image` for uint8 (N, H, W, 3) batches from `Preprocess.batch(..., output="uint8")`.

        Pass the preprocessing's `mean`/`std` when they are not OpenAI's (`preprocess.mean`, `preprocess.std`).
        """
        images = uint8_to_input(batch, self.device, self.dtype, mean, std, self.input_channels_last)
        return self.encode_image(images, normalize)


class EagerCLIP(ClipModel, CLIP):
    """clipcore's CLIP as the eager backend returns it."""


_ADOPTED: dict[tuple[type, type], type] = {(CLIP, EagerCLIP): EagerCLIP}


def adopt(model: CLIP, cls: type = EagerCLIP) -> CLIP:
    """Make `model` an instance of `cls` (a ClipModel subclass of CLIP) in place; its state is untouched.

    A model whose class is a subclass of CLIP (not CLIP itself) gets a subclass of both, made once.
    """
    base = type(model)
    if base is CLIP:
        model.__class__ = cls
        return model
    key = (base, cls)
    if key not in _ADOPTED:
        _ADOPTED[key] = type(base.__name__, (cls, base), {"__module__": base.__module__})
    model.__class__ = _ADOPTED[key]
    return model
