"""clipcore's own CLIP modules: the vision transformer, OpenAI's ModifiedResNet, the text transformer, CLIP.

    model = build_model(config)                                # on the meta device: no memory, no init
    model.load_state_dict(state_dict, strict=True, assign=True)  # the checkpoint's tensors become the weights

That is all a loader needs: the native towers have no non-persistent buffers (the text tower's causal mask
is SDPA's `is_causal`), so nothing is left on the meta device once every key is assigned. Towers from timm
and transformers (foreign.py) do have some, computed by their libraries; `clipcore.assemble` places them.
For training from scratch, build on a real device (or `to_empty` a meta model) and call `model.init_weights()`.
"""

from __future__ import annotations

import torch

from clipcore.towers.clip import CLIP, check_supported
from clipcore.towers.resnet import ModifiedResNet
from clipcore.towers.text import TextTransformer
from clipcore.towers.vit import VisionTransformer
from spec.config import ClipConfig

__all__ = ["CLIP", "ModifiedResNet", "TextTransformer", "VisionTransformer", "build_model", "check_supported"]


def build_model(
    config: ClipConfig, device: str | torch.device = "meta", dtype: torch.dtype | None = None
) -> CLIP:
    """The CLIP model `config` describes, in eval mode.

    On the meta device (the default) nothing is allocated or initialised. On a real device the tensors are
    allocated but NOT initialised (like `torch.empty`): assign a state dict or call `init_weights()`.
    `dtype` sets every floating-point tensor's dtype (LayerNorm still computes in float32).
    """
    with torch.device("meta"):
        model = CLIP(config)
    if dtype is not None:
        model = model.to(dtype)
    device = torch.device(device)
    if device.type != "meta":
        model = model.to_empty(device=device)
    return model.eval()
