"""Access to the reference implementations (open-clip-torch and OpenAI's `clip`), for tests only."""

from __future__ import annotations

import sys
import types


def import_openai_clip():
    """Import OpenAI's `clip` package (installed as clip-anytorch).

    Its `clip.py` does `from pkg_resources import packaging`, and the setuptools that torch 2.14 pulls
    no longer ships `pkg_resources`; a stand-in module built on `packaging` is all it needs.
    """
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        stand_in = types.ModuleType("pkg_resources")
        stand_in.packaging = packaging
        sys.modules["pkg_resources"] = stand_in
    import clip

    return clip


def openclip_model(config, device: str = "cpu"):
    """The reference model (open_clip's CLIP or CustomTextCLIP) for a `spec.ClipConfig`, built by open_clip.

    Built from the config's OpenCLIP JSON form exactly as `open_clip.create_model` would choose the class.
    On the meta device nothing is allocated, so even the largest configs are cheap to inspect.
    """
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = config.to_openclip()
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = CustomTextCLIP if custom else CLIP
    with torch.device(device):
        return cls(**cfg)


def openai_model_on_meta(name: str):
    """OpenAI's own `clip.model.CLIP` for one of its nine architectures, on the meta device.

    Hyperparameters are those of OpenAI's released files (see shared/research/openai_clip.md), so this is a
    state-dict layout that does not come from clipcore or OpenCLIP.
    """
    import torch

    clip = import_openai_clip()
    args = _OPENAI_ARCHITECTURES[name]
    with torch.device("meta"):
        return clip.model.CLIP(*args)


# name -> (embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
#          context_length, vocab_size, transformer_width, transformer_heads, transformer_layers)
_OPENAI_ARCHITECTURES = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
}
