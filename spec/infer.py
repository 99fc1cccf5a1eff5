"""`infer_config(shapes)`: the architecture of a CLIP checkpoint, read from its tensor shapes alone.

Most hyperparameters are in the shapes (widths, depths, patch and image sizes, vocabulary, which optional
parts exist). A few are not: the number of attention heads (a fused in-projection is 3w x w whatever the
head count), the activation (QuickGELU or GELU), and options without parameters (pooling, masks). For those
the rules are, in order:

1. a keyword override given by the caller;
2. the built-in (or user-added) model configs whose tensors have exactly these shapes, when they all agree
   on the value (this gives ViT-H/14 its 80-wide heads, ViT-g/14 its 88-wide ones, ...);
3. the documented default: head width 64 (a divisor of the width when 64 is not), GELU for layouts only
   OpenCLIP writes and QuickGELU for OpenAI's layout, the reference's defaults otherwise.

Every field set by rules 2 or 3 is named in `config.assumed`. Finally the inferred config's own shapes
(`shapes_of`) must equal the input exactly, so a missing key, an unexpected key or a contradictory shape is
always an error naming the key, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

from spec.config import ClipConfig, TextConfig, VisionConfig
from spec.errors import ConfigError, ShapeError, UnsupportedModelError
from spec.registry import configs_with_shapes_of
from spec.shapes import Shapes, shapes_of

__all__ = ["IGNORED_KEYS", "NON_INFERABLE", "check_shapes", "infer_config", "shapes_from"]

# Root scalars that OpenAI's TorchScript archives carry and its own loader drops before building the model.
IGNORED_KEYS = ("input_resolution", "context_length", "vocab_size")

DEFAULT_HEAD_WIDTH = 64
DEFAULT_LS_INIT_VALUE = 1e-5
DEFAULT_LOGIT_BIAS = -10.0  # SigLIP's initial bias; only the presence of the tensor can be read

# Fields that never show in the shapes. Each is taken from a matching known config or from its default.
NON_INFERABLE = {
    "vision": (
        "head_width", "attn_pooler_heads", "pool_type", "final_ln_after_pool", "output_tokens", "patch_dropout",
        "pos_embed_type", "act_kwargs", "norm_kwargs", "block_type", "ls_init_value",
    ),
    "text": (
        "heads", "pad_id", "eos_id", "no_causal_mask", "pool_type", "final_ln_after_pool", "output_tokens",
        "act_kwargs", "norm_kwargs", "block_type", "ls_init_value", "hf_tokenizer_name", "tokenizer_mode",
        "tokenizer_kwargs",
    ),
    "model": ("quick_gelu", "init_logit_scale", "init_logit_bias", "cast_dtype"),
}


def infer_config(shapes: Mapping[str, Any], **overrides: Any) -> ClipConfig:
    """The `ClipConfig` whose state dict has exactly these keys and shapes.

    `shapes` maps each state-dict key to a shape (a tuple of ints, or anything with `.shape`). `overrides`
    set model fields (`quick_gelu=False`) or tower fields (`vision={"head_width": 80}`, `text={"heads": 16}`);
    an override of a field the shapes determine must agree with them.
    """
    found = shapes_from(shapes)
    _reject_wrappers(found)
    model_keys = {k: v for k, v in found.items() if k not in IGNORED_KEYS}
    text_prefix = "text." if any(k.startswith("text.") for k in model_keys) else ""

    vision_overrides = overrides.get("vision")
    stated_size = vision_overrides.get("image_size") if isinstance(vision_overrides, Mapping) else None
    vision = _infer_vision(model_keys, stated_size)
    text = _infer_text(model_keys, text_prefix)
    embed_dim = _infer_embed_dim(model_keys, vision, text_prefix)
    logit_scale = _shape(model_keys, "logit_scale", "the learned temperature")
    if logit_scale not in ((), (1,)):
        raise ShapeError(
            f"key 'logit_scale' has shape {logit_scale}, expected () or (1,)",
            fix="logit_scale is a single number; check that the file is a CLIP checkpoint",
        )
    has_bias = "logit_bias" in model_keys
    openai_layout = text_prefix == "" and not _uses_openclip_only_parts(vision, text, has_bias)

    facts: dict[str, Any] = {
        "embed_dim": embed_dim,
        "vision": vision,
        "text": text,
        "custom_text": text_prefix == "text.",
        "nonscalar_logit_scale": logit_scale == (1,),
        # defaults for what the shapes cannot tell (replaced below by a known config's values or overrides)
        "quick_gelu": openai_layout,
        "init_logit_bias": DEFAULT_LOGIT_BIAS if has_bias else None,
    }
    config = _build(facts, model_keys)
    config = _adopt_known_values(config)
    config = _apply_overrides(config, overrides)
    check_shapes(config, model_keys)
    return config


def shapes_from(shapes: Mapping[str, Any]) -> Shapes:
    """Normalise a mapping of key -> shape (tuples, lists, torch.Size, tensors) to `{str: tuple[int, ...]}`."""
    if not isinstance(shapes, Mapping):
        raise ShapeError(
            f"expected a mapping of state-dict key -> shape, got {type(shapes).__name__}",
            fix="pass a dict such as {k: v.shape for k, v in state_dict.items()}",
        )
    out: Shapes = {}
    for key, value in shapes.items():
        if not isinstance(key, str):
            raise ShapeError(f"state-dict key {key!r} is not a string", fix="keys are dotted parameter names")
        if type(value) is tuple and all(type(d) is int and d >= 0 for d in value):  # already normal: fast path
            out[key] = value
            continue
        shape = getattr(value, "shape", value)
        try:
            dims = tuple(operator.index(d) for d in shape)
        except TypeError:
            dims = None
        if dims is None or any(d < 0 for d in dims):
            raise ShapeError(
                f"key {key!r} has shape {value!r}, which is not a tuple of non-negative integers",
                fix="pass shapes as tuples of ints (or tensors, whose .shape is used)",
            )
        out[key] = dims
    return out


# --- reading the towers -------------------------------------------------------------------------------------------


def _shape(shapes: Shapes, key: str, what: str) -> tuple[int, ...]:
    try:
        return shapes[key]
    except KeyError:
        raise ShapeError(
            f"key {key!r} ({what}) is missing",
            fix="the file is not a complete CLIP state dict in the OpenAI/OpenCLIP layout",
        ) from None


def _dims(shapes: Shapes, key: str, what: str, ndim: int) -> tuple[int, ...]:
    shape = _shape(shapes, key, what)
    if len(shape) != ndim:
        raise ShapeError(
            f"key {key!r} ({what}) has shape {shape}, expected {ndim} dimensions",
            fix="the file is not a CLIP state dict in the OpenAI/OpenCLIP layout",
        )
    return shape


def _count_blocks(shapes: Shapes, prefix: str) -> int:
    """How many consecutive numbered children `prefix.0`, `prefix.1`, ... the keys have."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    if not indices:
        raise ShapeError(f"no keys under {prefix!r}.N", fix="the file lacks this tower's layers")
    missing = sorted(set(range(max(indices) + 1)) - indices)
    if missing:
        raise ShapeError(
            f"keys {prefix}.{missing[0]}.* are missing while later blocks exist (found {len(indices)} of "
            f"{max(indices) + 1})",
            fix="the file is incomplete or was edited; re-export it",
        )
    return max(indices) + 1


def _nice_ratio(width: int, hidden: int) -> float:
    """The shortest decimal ratio r with int(width * r) == hidden (4.0 rather than 4.000000001)."""
    for digits in range(1, 8):
        r = round(hidden / width, digits)
        if int(width * r) == hidden:
            return r
    return hidden / width


def _head_width_default(width: int) -> int:
    if width % DEFAULT_HEAD_WIDTH == 0:
        return DEFAULT_HEAD_WIDTH
    return max(d for d in range(1, DEFAULT_HEAD_WIDTH + 1) if width % d == 0)


def _block_features(shapes: Shapes, block: str, width: int) -> dict[str, Any]:
    """What one residual block shows: MLP width, layer scale and OpenCLIP's custom-block extras."""
    hidden = _dims(shapes, f"{block}.mlp.c_fc.weight", "the MLP's first layer", 2)[0]
    found: dict[str, Any] = {
        "mlp_ratio": _nice_ratio(width, hidden),
        "ls_init_value": DEFAULT_LS_INIT_VALUE if f"{block}.ls_1.gamma" in shapes else None,
        "qk_norm": f"{block}.attn.ln_q.weight" in shapes,
        "scaled_cosine_attn": f"{block}.attn.logit_scale" in shapes,
        "scale_heads": f"{block}.attn.head_scale" in shapes,
        "scale_attn_inner": f"{block}.attn.ln_inner.weight" in shapes,
        "scale_attn": f"{block}.ln_attn.weight" in shapes,
        "scale_fc": f"{block}.mlp.ln.weight" in shapes,
    }
    # Some extras do carry the head count.
    if found["qk_norm"]:
        found["head_width"] = _dims(shapes, f"{block}.attn.ln_q.weight", "the query norm", 1)[0]
    for extra in ("logit_scale", "head_scale"):
        if f"{block}.attn.{extra}" in shapes:
            found["head_width"] = width // max(_shape(shapes, f"{block}.attn.{extra}", "per-head scale")[0], 1)
    return found


def _infer_vision(shapes: Shapes, stated_size: Any = None) -> VisionConfig:
    if any(k.startswith("visual.trunk.") for k in shapes):
        raise UnsupportedModelError(
            "this checkpoint has a timm vision tower (visual.trunk.*): its architecture is not readable from "
            "shapes",
            fix="load it with its model config: clipcore.create_model(name, pretrained=path)",
        )
    if "visual.layer1.0.conv1.weight" in shapes:
        return _infer_resnet(shapes)
    if "visual.conv1.weight" in shapes:
        return _infer_vit(shapes, stated_size)
    raise ShapeError(
        "no image tower found: neither 'visual.conv1.weight' (ViT) nor 'visual.layer1.0.conv1.weight' "
        "(ModifiedResNet) is present",
        fix="check that the file is a CLIP checkpoint; wrappers such as 'state_dict' or a 'module.' prefix "
        "are removed by clipcore.checkpoint before inference",
    )


def _infer_vit(shapes: Shapes, stated_size: Any = None) -> VisionConfig:
    width, channels, ph, pw = _dims(shapes, "visual.conv1.weight", "the patch embedding", 4)
    if ph != pw or channels != 3:
        raise ShapeError(
            f"key 'visual.conv1.weight' has shape {(width, channels, ph, pw)}: expected (width, 3, p, p)",
            fix="only square patches over RGB input are supported",
        )
    positions = _dims(shapes, "visual.positional_embedding", "the image position table", 2)[0] - 1
    grid = math.isqrt(max(positions, 0))
    image_size: Any = stated_size if stated_size is not None else grid * ph
    if stated_size is None and (grid * grid != positions or grid == 0):
        # A rectangular grid cannot be told apart from its transpose: the caller must say.
        raise ShapeError(
            f"key 'visual.positional_embedding' has {positions + 1} rows: {positions} patches do not form a "
            "square grid, so the image height and width cannot be read from the shapes",
            fix="pass the image size, e.g. infer_config(shapes, vision={'image_size': (h, w)})",
        )
    layers = _count_blocks(shapes, "visual.transformer.resblocks")
    block = _block_features(shapes, "visual.transformer.resblocks.0", width)
    embed_dim = _dims(shapes, "visual.proj", "the image projection", 2)[1]
    fields: dict[str, Any] = {
        "image_size": image_size,
        "layers": layers,
        "width": width,
        "patch_size": ph,
        "head_width": block.pop("head_width", _head_width_default(width)),
        "no_ln_pre": "visual.ln_pre.weight" not in shapes,
        **block,
    }
    if "visual.attn_pool.query" in shapes:
        fields["attentional_pool"] = "parallel" if "visual.attn_pool_contrastive.query" in shapes else True
        fields["attn_pooler_queries"] = _dims(shapes, "visual.attn_pool.query", "the pooler queries", 2)[0]
        fields["attn_pooler_heads"] = _largest_divisor_up_to(embed_dim, 8)
    return _make(VisionConfig, fields, "visual")


def _largest_divisor_up_to(n: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if n % d == 0)


def _infer_resnet(shapes: Shapes) -> VisionConfig:
    width = _dims(shapes, "visual.layer1.0.conv1.weight", "the first bottleneck", 4)[0]
    layers = tuple(_count_blocks(shapes, f"visual.layer{stage}") for stage in (1, 2, 3, 4))
    positions = _dims(shapes, "visual.attnpool.positional_embedding", "the attention pool's positions", 2)[0] - 1
    grid = math.isqrt(max(positions, 0))
    if grid * grid != positions or grid == 0:
        raise ShapeError(
            f"key 'visual.attnpool.positional_embedding' has {positions + 1} rows: expected a square grid + 1",
            fix="the ModifiedResNet attention pool needs a square feature map",
        )
    fields = {
        "image_size": grid * 32,
        "layers": layers,
        "width": width,
        "head_width": _head_width_default(width * 32),
        "patch_size": None,
    }
    return _make(VisionConfig, fields, "visual")


def _infer_text(shapes: Shapes, prefix: str) -> TextConfig:
    vocab, width = _dims(shapes, f"{prefix}token_embedding.weight", "the token embedding", 2)
    positions = _dims(shapes, f"{prefix}positional_embedding", "the text position table", 2)[0]
    embed_cls = f"{prefix}cls_emb" in shapes
    layers = _count_blocks(shapes, f"{prefix}transformer.resblocks")
    block = _block_features(shapes, f"{prefix}transformer.resblocks.0", width)
    head_width = block.pop("head_width", _head_width_default(width))
    fields: dict[str, Any] = {
        "context_length": positions - (1 if embed_cls else 0),
        "vocab_size": vocab,
        "width": width,
        "heads": width // head_width,
        "layers": layers,
        "embed_cls": embed_cls,
        "proj_bias": f"{prefix}text_projection.bias" in shapes,
        "proj_type": "linear" if any(k.startswith(f"{prefix}text_projection") for k in shapes) else "none",
        **block,
    }
    return _make(TextConfig, fields, prefix + "transformer")


def _infer_embed_dim(shapes: Shapes, vision: VisionConfig, prefix: str) -> int:
    if vision.kind == "resnet":
        image_dim = _dims(shapes, "visual.attnpool.c_proj.weight", "the attention pool's output", 2)[0]
    else:
        image_dim = _dims(shapes, "visual.proj", "the image projection", 2)[1]
    for key, axis in ((f"{prefix}text_projection", 1), (f"{prefix}text_projection.weight", 0)):
        if key in shapes:
            text_dim = _dims(shapes, key, "the text projection", 2)[axis]
            if text_dim != image_dim:
                raise ShapeError(
                    f"key {key!r} has shape {shapes[key]}: it projects text to {text_dim} dimensions but the "
                    f"image tower projects to {image_dim}",
                    fix="both towers must end in the same joint embedding width; the file mixes two models",
                )
    return image_dim


def _uses_openclip_only_parts(vision: VisionConfig, text: TextConfig, has_bias: bool) -> bool:
    """Parts OpenAI's models never have: a file with one of them was written by OpenCLIP (GELU by default)."""
    return bool(
        has_bias
        or vision.ls_init_value is not None
        or vision.attentional_pool
        or vision.no_ln_pre
        or vision.uses_custom_block
        or text.ls_init_value is not None
        or text.proj_bias
        or text.proj_type == "none"
        or text.uses_custom_block
    )


def _make(cls: type, fields: dict[str, Any], where: str) -> Any:
    try:
        return cls(**fields)
    except ConfigError as e:
        raise ShapeError(
            f"the shapes under {where!r} describe an impossible tower: {e.problem}",
            fix="the file is corrupt or not a CLIP checkpoint",
        ) from None


def _build(facts: dict[str, Any], shapes: Shapes) -> ClipConfig:
    try:
        return ClipConfig(**facts)
    except ConfigError as e:
        raise ShapeError(
            f"the shapes describe an impossible model: {e.problem}",
            fix="the file is corrupt or mixes two models",
        ) from None


# --- what the shapes cannot say ---------------------------------------------------------------------------------


def _adopt_known_values(config: ClipConfig) -> ClipConfig:
    """Fill the non-inferable fields from the known configs with the same shapes, where they agree.

    `assumed` then names the guesses that can change a loaded model's numbers: the head counts and the
    activation always, the attention pooler's heads when there is one, and any value a known config supplied
    that differs from the reference's default.
    """
    matches = configs_with_shapes_of(config)
    changes: dict[str, Any] = {"vision": {}, "text": {}}
    assumed = {"quick_gelu", "text.heads", "vision.head_width"}
    if config.vision.attentional_pool:
        assumed.add("vision.attn_pooler_heads")
    for group, names in NON_INFERABLE.items():
        for name in names:
            values = {_freeze_key(_get(m, group, name)) for m in matches}
            if len(values) != 1:
                continue
            value = _get(matches[0], group, name)
            (changes if group == "model" else changes[group])[name] = value
            if value != _default(group, name):
                assumed.add(name if group == "model" else f"{group}.{name}")
    # The MLP ratio is read from the shapes as a width; a known config's exact spelling of it is nicer.
    for group in ("vision", "text"):
        ratios = {_get(m, group, "mlp_ratio") for m in matches}
        if len(ratios) == 1:
            changes[group]["mlp_ratio"] = ratios.pop()
    new = config.replace(**changes)
    return dataclasses.replace(new, assumed=tuple(sorted(assumed)))


def _get(config: ClipConfig, group: str, name: str) -> Any:
    return getattr(config if group == "model" else getattr(config, group), name)


def _default(group: str, name: str) -> Any:
    cls = {"model": ClipConfig, "vision": VisionConfig, "text": TextConfig}[group]
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _freeze_key(value: Any) -> Any:
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value


def _apply_overrides(config: ClipConfig, overrides: dict[str, Any]) -> ClipConfig:
    if not overrides:
        return config
    known = {f.name for f in dataclasses.fields(ClipConfig)} - {"assumed"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown override(s) {unknown}",
            fix=f"overrides are ClipConfig fields {sorted(known)}; tower fields go in vision={{...}} / text={{...}}",
        )
    try:
        new = config.replace(**overrides)
    except TypeError as e:  # an unknown tower field
        raise ConfigError(f"bad override: {e}", fix="see spec.VisionConfig / spec.TextConfig for field names") from None
    given = set()
    for name, value in overrides.items():
        if name in ("vision", "text") and isinstance(value, Mapping):
            given |= {f"{name}.{k}" for k in value}
        else:
            given.add(name)
    return dataclasses.replace(new, assumed=tuple(a for a in config.assumed if a not in given))


def check_shapes(config: ClipConfig, shapes: Mapping[str, Any]) -> None:
    """Raise a ShapeError naming the first key where `shapes` and the model `config` describes differ.

    The OpenAI archives' root scalars (IGNORED_KEYS) are allowed in `shapes`.
    """
    shapes = {k: v for k, v in shapes_from(shapes).items() if k not in IGNORED_KEYS}
    expected = shapes_of(config)
    missing = [k for k in expected if k not in shapes]
    if missing:
        raise ShapeError(
            f"key {missing[0]!r} is missing (expected shape {expected[missing[0]]})"
            + (f", and {len(missing) - 1} more" if len(missing) > 1 else ""),
            fix="the file is incomplete, or does not match the config (or an override) it is loaded with",
        )
    unexpected = [k for k in shapes if k not in expected]
    if unexpected:
        raise ShapeError(
            f"key {unexpected[0]!r} (shape {shapes[unexpected[0]]}) is not part of the inferred architecture"
            + (f", nor are {len(unexpected) - 1} more" if len(unexpected) > 1 else ""),
            fix="the file has parts clipcore does not know, or a mixed layout; remove them or pass a config",
        )
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise ShapeError(
                f"key {key!r} has shape {shapes[key]}, expected {shape}",
                fix="the tensors contradict each other (or an override); the file may mix two models",
            )


def _reject_wrappers(shapes: Shapes) -> None:
    if shapes and all(k.startswith("module.") for k in shapes):
        raise ShapeError(
            "every key starts with 'module.' (a DistributedDataParallel wrapper)",
            fix="strip the prefix first; clipcore.checkpoint.open_checkpoint does this for you",
        )
    if "state_dict" in shapes or any(k.startswith("state_dict.") for k in shapes):
        raise ShapeError(
            "the mapping holds a 'state_dict' wrapper, not the model's tensors",
            fix="pass checkpoint['state_dict']; clipcore.checkpoint.open_checkpoint unwraps it for you",
        )
