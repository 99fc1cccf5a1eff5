"""What a checkpoint's own metadata says about the hyperparameters its shapes cannot tell.

Shapes fix the architecture except the head counts and the activation. Some files carry that too:
OpenAI's TorchScript archives (their root scalars mark OpenAI's own training: QuickGELU, 64-wide heads),
a Hugging Face `config.json` (hidden_act, num_attention_heads, layer_norm_eps) and an OpenCLIP
`open_clip_config.json` (the whole model config). Those facts become overrides for `spec.infer_config`,
so they are not guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from clipcore.errors import ConfigError
from spec import ClipConfig
from spec.checkpoints import available_models
from spec.infer import IGNORED_KEYS

__all__ = ["facts", "merge_overrides", "openai_facts"]


def openai_facts(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """OpenAI trained every released model with QuickGELU and 64-wide heads (its `build_model` rule).

    A file whose widths are not multiples of 64 cannot be one of OpenAI's, whatever its markings: no facts.
    """
    text_width = shapes.get("token_embedding.weight", (0, 0))[1]
    vit_width = shapes.get("visual.class_embedding", (64,))[0]  # a ResNet's heads are always 64 wide
    if not text_width or text_width % 64 or vit_width % 64:
        return {}
    return {"quick_gelu": True, "vision": {"head_width": 64}, "text": {"heads": text_width // 64}}


def _hf_facts(hf: Mapping[str, Any]) -> dict[str, Any]:
    vision, text = hf.get("vision_config") or {}, hf.get("text_config") or {}
    acts = {vision.get("hidden_act"), text.get("hidden_act")} - {None}
    out: dict[str, Any] = {"vision": {}, "text": {}}
    if acts == {"quick_gelu"}:
        out["quick_gelu"] = True
    elif acts == {"gelu"}:
        out["quick_gelu"] = False
    for group, cfg, field in (("vision", vision, "head_width"), ("text", text, "heads")):
        heads, width = cfg.get("num_attention_heads"), cfg.get("hidden_size")
        if isinstance(heads, int) and heads > 0:
            out[group][field] = width // heads if field == "head_width" and isinstance(width, int) else heads
        eps = cfg.get("layer_norm_eps")
        if isinstance(eps, float) and eps != 1e-5:
            out[group]["norm_kwargs"] = {"eps": eps}
    if out.get("quick_gelu") is None:
        out.pop("quick_gelu", None)
    return out


def facts(
    metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], name: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """Overrides the checkpoint's metadata (or its registry name) establishes, and where they came from."""
    cfg, where = _openclip_config(metadata)
    if cfg is not None:
        try:
            config = ClipConfig.from_openclip(cfg.get("model_cfg", cfg))
        except (ConfigError, AttributeError) as e:
            raise ConfigError(f"the checkpoint's {where} is not a valid model config: {e}") from None
        return _config_as_overrides(config), where
    if isinstance(metadata.get("hf_config"), Mapping):
        return _hf_facts(metadata["hf_config"]), "config.json"
    if name in available_models() or all(k in metadata for k in IGNORED_KEYS):
        return openai_facts(shapes), "an OpenAI release"
    return {}, None


def _openclip_config(metadata: Mapping[str, Any]) -> tuple[Any, str | None]:
    """An OpenCLIP config from a model folder's open_clip_config.json, or from a safetensors header's
    `open_clip_config` entry (a JSON string: how clipcore's own safetensors files carry their config)."""
    if "open_clip_config" in metadata:
        return metadata["open_clip_config"], "open_clip_config.json"
    header = metadata.get("safetensors")
    text = header.get("open_clip_config") if isinstance(header, Mapping) else None
    if not isinstance(text, str):
        return None, None
    try:
        return json.loads(text), "safetensors header's open_clip_config"
    except ValueError as e:
        raise ConfigError(f"the checkpoint's safetensors header has an open_clip_config that is not JSON: {e}",
                          fix="rewrite the file's metadata, or drop the entry to infer the config from shapes",
                          ) from None


def _config_as_overrides(config: ClipConfig) -> dict[str, Any]:
    """Every non-inferable field of a full config, as overrides (inferable ones are checked by the shapes)."""
    from spec.infer import NON_INFERABLE

    out: dict[str, Any] = {name: getattr(config, name) for name in NON_INFERABLE["model"]}
    for group in ("vision", "text"):
        tower = getattr(config, group)
        out[group] = {name: getattr(tower, name) for name in NON_INFERABLE[group]}
        out[group]["mlp_ratio"] = tower.mlp_ratio
    return out


def merge_overrides(base: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """The user's overrides win; tower dicts are merged field by field."""
    out = dict(base)
    for key, value in user.items():
        if key in ("vision", "text") and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
