"""OpenCLIP's pretrained-weights registry as data: which (model, tag) pairs exist and where each file lives.

The records are package data (spec/data/openclip_pretrained.json, written by
scripts/sync_openclip_pretrained.py from the installed reference), one per pair of
`open_clip.list_pretrained()`, in the same order:

    spec.list_pretrained()[:2]                     # [('RN50', 'openai'), ('RN50', 'yfcc15m')]
    cfg = spec.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    cfg.hf_repo, cfg.hf_files                      # 'laion/CLIP-ViT-B-32-laion2B-s34B-b79K',
                                                   # ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin')
    cfg.preprocess                                 # mean, std, interpolation, resize_mode for Preprocess

Tags are matched as the reference matches them: case-insensitive, with '-' read as '_'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "PretrainedCfg",
    "clean_tag",
    "get_pretrained_cfg",
    "is_pretrained_cfg",
    "list_pretrained",
    "list_pretrained_models_by_tag",
    "list_pretrained_tags_by_model",
]

_DATA = Path(__file__).resolve().parent / "data" / "openclip_pretrained.json"

# The reference's weight file names on the hub; safetensors first when a record names no file.
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_CONFIG_NAME = "open_clip_config.json"


@dataclass(frozen=True)
class PretrainedCfg:
    """One released checkpoint of an OpenCLIP model config."""

    model: str
    tag: str
    url: str | None
    sha256: str | None  # the hash (or its leading hex digits) the URL states; None when it states none
    hf_repo: str | None
    hf_file: str | None  # None: the reference's default file names, see `hf_files`
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    quick_gelu: bool

    @property
    def url_file(self) -> str | None:
        """The file name a URL download is stored under (its last path segment)."""
        return self.url.rsplit("/", 1)[-1] if self.url else None

    @property
    def hf_files(self) -> tuple[str, ...]:
        """The hub file names to try, in the reference's order: a safetensors version first, then the named file."""
        if not self.hf_repo:
            return ()
        name = self.hf_file or HF_WEIGHTS_NAME
        if name == HF_WEIGHTS_NAME:
            return (HF_SAFE_WEIGHTS_NAME, name)
        stem, dot, suffix = name.rpartition(".")
        if dot and suffix in ("bin", "pth"):
            return (f"{stem}.safetensors", name)
        return (name,)

    @property
    def preprocess(self) -> dict[str, Any]:
        """The preprocessing these weights were trained with (keys of OpenCLIP's preprocess_cfg)."""
        return {"mean": self.mean, "std": self.std, "interpolation": self.interpolation,
                "resize_mode": self.resize_mode}


def clean_tag(tag: str) -> str:
    """The reference's tag normalisation: lower case, '-' as '_'."""
    return tag.lower().replace("-", "_")


@cache
def _registry() -> dict[str, dict[str, PretrainedCfg]]:
    data = json.loads(_DATA.read_text(encoding="utf-8"))["models"]
    return {
        model: {
            tag: PretrainedCfg(model=model, tag=tag, **{**rec, "mean": tuple(rec["mean"]), "std": tuple(rec["std"])})
            for tag, rec in tags.items()
        }
        for model, tags in data.items()
    }


def list_pretrained(as_str: bool = False) -> list[tuple[str, str]] | list[str]:
    """Every (model, tag) pair with released weights, in the reference's order; 'model:tag' with as_str."""
    pairs = [(model, tag) for model, tags in _registry().items() for tag in tags]
    return [f"{m}:{t}" for m, t in pairs] if as_str else pairs


def list_pretrained_tags_by_model(model: str) -> list[str]:
    return list(_registry().get(model, {}))


def list_pretrained_models_by_tag(tag: str) -> list[str]:
    return [model for model, tags in _registry().items() if tag in tags]


def get_pretrained_cfg(model: str, tag: str) -> PretrainedCfg | None:
    """The record of `model`'s weights tagged `tag`, or None when there is none."""
    return _registry().get(model, {}).get(clean_tag(tag))


def is_pretrained_cfg(model: str, tag: str) -> bool:
    return get_pretrained_cfg(model, tag) is not None
