"""CLIP hyperparameters as frozen, validated dataclasses.

The field names and defaults are those of OpenCLIP's `CLIPVisionCfg` / `CLIPTextCfg` and model JSON files, so a
config round-trips through OpenCLIP's JSON schema without a translation table, and OpenAI's nine models are
just particular values. Every field is checked on construction: an impossible value raises `ConfigError`
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spec.errors import ConfigError

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "ClipConfig",
    "PreprocessConfig",
    "TextConfig",
    "VisionConfig",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Values of the string-valued options that the reference accepts.
VISION_POOL_TYPES = ("tok", "avg", "none")
TEXT_POOL_TYPES = ("first", "last", "argmax", "eos", "none")
POS_EMBED_TYPES = ("learnable", "sin_cos_2d")
BLOCK_TYPES = (None, "default", "custom")
ATTENTIONAL_POOL_MODES = (False, True, "parallel", "cascade")
TEXT_PROJ_TYPES = ("linear", "none")
TIMM_PROJ_TYPES = ("linear", "mlp", "none", "", None)
HF_PROJ_TYPES = ("linear", "mlp", "none", "", None)
HF_POOLER_TYPES = ("mean_pooler", "max_pooler", "cls_pooler", "cls_last_hidden_state_pooler")
CAST_DTYPES = (None, "fp16", "bf16")

# The optional block features of OpenCLIP's "custom" attention block.
CUSTOM_BLOCK_FLAGS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


# --- small validators: each returns None when fine, else the description of what is allowed -------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "a positive integer"


def _non_negative_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "a non-negative integer"


def _positive_real(v: Any) -> str | None:
    return None if _is_real(v) and v > 0 else "a positive finite number"


def _optional_real(v: Any) -> str | None:
    return None if v is None or _is_real(v) else "None or a finite number"


def _fraction(v: Any) -> str | None:
    return None if _is_real(v) and 0 <= v < 1 else "a number in [0, 1)"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "True or False"


def _optional_str(v: Any) -> str | None:
    return None if v is None or isinstance(v, str) else "None or a string"


def _optional_mapping(v: Any) -> str | None:
    return None if v is None or isinstance(v, Mapping) else "None or a mapping of keyword arguments"


def _one_of(options: tuple) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if any(v is o or (type(v) is type(o) and v == o) for o in options) else f"one of {options}"

    return check


def _act_kwargs(v: Any) -> str | None:
    # Only GELU takes arguments (QuickGELU has none): its tanh approximation.
    if v is None:
        return None
    if isinstance(v, Mapping) and set(v) <= {"approximate"} and v.get("approximate", "none") in ("none", "tanh"):
        return None
    return "None or {'approximate': 'none' | 'tanh'} (the arguments of GELU)"


def _norm_kwargs(v: Any) -> str | None:
    if v is None or (isinstance(v, Mapping) and set(v) <= {"eps"} and _positive_real(v.get("eps", 1e-5)) is None):
        return None
    return "None or {'eps': a positive number} (the LayerNorm epsilon)"


def _size(v: Any) -> str | None:
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, tuple) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v):
        return None
    return "a positive integer or a (height, width) pair of positive integers"


def _vision_layers(v: Any) -> str | None:
    if _is_int(v) and v > 0:
        return None
    if isinstance(v, tuple) and len(v) == 4 and all(_is_int(x) and x > 0 for x in v):
        return None
    return "a positive integer (ViT) or four positive integers (ModifiedResNet stages)"


class FrozenDict(dict):
    """A read-only dict: hashable, picklable and equal to the plain dict with the same items."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config mappings are read-only; build a new config with .replace()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=repr)))

    def __reduce__(self) -> tuple:
        return (FrozenDict, (dict(self),))


def _freeze(v: Any) -> Any:
    """Lists become tuples and mappings read-only copies, so a frozen config cannot be changed behind its back."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, Mapping) and not isinstance(v, FrozenDict):
        return FrozenDict({k: _freeze(x) for k, x in v.items()})
    return v


def _thaw(v: Any) -> Any:
    """The inverse of `_freeze`, for JSON output."""
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    return v


def _validate(obj: Any, rules: Mapping[str, Callable[[Any], str | None]], where: str) -> None:
    for name, rule in rules.items():
        value = getattr(obj, name)
        allowed = rule(value)
        if allowed is not None:
            raise ConfigError(
                f"{where}.{name} = {value!r} is not allowed: it must be {allowed}",
                fix=f"set {where}.{name} to {allowed}",
            )


def _normalise_fields(obj: Any, floats: tuple[str, ...] = ()) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = _freeze(value)
        if f.name in floats and _is_int(new):
            new = float(new)  # JSON writes 4.0 as 4; keep the declared type
        if new is not value:
            object.__setattr__(obj, f.name, new)


def _mapping_field() -> Any:
    return field(default=None)


def _require(condition: bool, problem: str, fix: str) -> None:
    if not condition:
        raise ConfigError(problem, fix=fix)


# --- the tower configs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    """The image tower: a ViT (`layers` an int), a ModifiedResNet (`layers` four ints) or a timm trunk."""

    image_size: int | tuple[int, int] = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: int | None = 16
    ls_init_value: float | None = None
    patch_dropout: float = 0.0
    attentional_pool: bool | str = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    no_ln_pre: bool = False
    pos_embed_type: str = "learnable"
    final_ln_after_pool: bool = False
    pool_type: str = "tok"
    output_tokens: bool = False
    act_kwargs: Mapping[str, Any] | None = _mapping_field()
    norm_kwargs: Mapping[str, Any] | None = _mapping_field()
    block_type: str | None = None
    qk_norm: bool = False
    scaled_cosine_attn: bool = False
    scale_heads: bool = False
    scale_attn_inner: bool = False
    scale_attn: bool = False
    scale_fc: bool = False
    timm_model_name: str | None = None
    timm_model_pretrained: bool = False
    timm_pool: str = "avg"
    timm_proj: str | None = "linear"
    timm_proj_bias: bool = False
    timm_drop: float = 0.0
    timm_drop_path: float | None = None

    def __post_init__(self) -> None:
        _normalise_fields(self, floats=("mlp_ratio", "patch_dropout", "timm_drop"))
        _validate(self, _VISION_RULES, "vision")
        if self.kind == "resnet":  # no patches: one spelling (None), so that equal towers compare equal
            object.__setattr__(self, "patch_size", None)
        if self.kind == "vit":
            _validate(self, {"patch_size": _positive_int}, "vision")
            for side in self.image_size_hw:
                _require(
                    side % self.patch_size == 0,
                    f"vision.image_size = {self.image_size!r} is not divisible by vision.patch_size = "
                    f"{self.patch_size}",
                    fix="choose an image size that is a multiple of the patch size",
                )
            _require(
                self.width % self.head_width == 0,
                f"vision.width = {self.width} is not divisible by vision.head_width = {self.head_width}",
                fix="choose a head width that divides the width (heads = width // head_width)",
            )
            _require(
                self.mlp_width >= 1,
                f"vision.mlp_ratio = {self.mlp_ratio} gives an MLP of width {self.mlp_width}",
                fix="use an mlp_ratio with int(width * mlp_ratio) >= 1",
            )
            _require(
                not (self.qk_norm and self.scaled_cosine_attn),
                "vision.qk_norm and vision.scaled_cosine_attn are both on",
                fix="turn one of them off (the reference allows only one)",
            )
            _require(
                self.pos_embed_type != "sin_cos_2d" or self.width % 4 == 0,
                f"vision.pos_embed_type = 'sin_cos_2d' needs a width divisible by 4, got {self.width}",
                fix="use a width that is a multiple of 4 or pos_embed_type='learnable'",
            )
            _require(
                self.pos_embed_type != "sin_cos_2d" or self.grid_size[0] == self.grid_size[1],
                f"vision.pos_embed_type = 'sin_cos_2d' needs a square grid, got {self.grid_size}",
                fix="use a square image size or pos_embed_type='learnable'",
            )
        elif self.kind == "resnet":
            _require(
                _is_int(self.image_size) and self.image_size % 32 == 0,
                f"vision.image_size = {self.image_size!r} is not allowed for a ModifiedResNet: it must be one "
                "integer that is a multiple of 32 (the tower downsamples 32 times)",
                fix="use a square image size that is a multiple of 32, e.g. 224",
            )
            _require(
                (self.width * 32) % self.head_width == 0,
                f"vision.width * 32 = {self.width * 32} is not divisible by vision.head_width = {self.head_width}",
                fix="choose a head width that divides width * 32 (the attention pool's width)",
            )

    @property
    def kind(self) -> str:
        """'timm', 'resnet' (OpenAI's ModifiedResNet) or 'vit'."""
        if self.timm_model_name:
            return "timm"
        return "resnet" if isinstance(self.layers, tuple) else "vit"

    @property
    def image_size_hw(self) -> tuple[int, int]:
        s = self.image_size
        return (s, s) if isinstance(s, int) else s

    @property
    def heads(self) -> int:
        """Attention heads: of the transformer for a ViT, of the attention pool for a ModifiedResNet."""
        return (self.width * 32 if self.kind == "resnet" else self.width) // self.head_width

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def grid_size(self) -> tuple[int, int]:
        step = 32 if self.kind == "resnet" else (self.patch_size or 1)
        h, w = self.image_size_hw
        return (h // step, w // step)

    @property
    def uses_custom_block(self) -> bool:
        # OpenCLIP picks the custom block when asked to, or by default when a custom feature is on;
        # an explicit block_type='default' keeps the default block (and ignores the flags).
        flags = any(getattr(self, f) for f in CUSTOM_BLOCK_FLAGS)
        return self.block_type == "custom" or (self.block_type is None and flags)


_VISION_RULES: dict[str, Callable[[Any], str | None]] = {
    "image_size": _size,
    "layers": _vision_layers,
    "width": _positive_int,
    "head_width": _positive_int,
    "mlp_ratio": _positive_real,
    "patch_size": lambda v: None if v is None or (_is_int(v) and v > 0) else "None or a positive integer",
    "ls_init_value": _optional_real,
    "patch_dropout": _fraction,
    "attentional_pool": _one_of(ATTENTIONAL_POOL_MODES),
    "attn_pooler_queries": _positive_int,
    "attn_pooler_heads": _positive_int,
    "no_ln_pre": _bool,
    "pos_embed_type": _one_of(POS_EMBED_TYPES),
    "final_ln_after_pool": _bool,
    "pool_type": _one_of(VISION_POOL_TYPES),
    "output_tokens": _bool,
    "act_kwargs": _act_kwargs,
    "norm_kwargs": _norm_kwargs,
    "block_type": _one_of(BLOCK_TYPES),
    **{flag: _bool for flag in CUSTOM_BLOCK_FLAGS},
    "timm_model_name": _optional_str,
    "timm_model_pretrained": _bool,
    "timm_pool": lambda v: None if isinstance(v, str) else "a string (e.g. 'avg', 'token', 'map' or '')",
    "timm_proj": _one_of(TIMM_PROJ_TYPES),
    "timm_proj_bias": _bool,
    "timm_drop": _fraction,
    "timm_drop_path": lambda v: None if v is None or _fraction(v) is None else "None or a number in [0, 1)",
}


@dataclass(frozen=True)
class TextConfig:
    """The text tower: OpenAI's causal transformer (with OpenCLIP's options) or a Hugging Face encoder."""

    context_length: int = 77
    vocab_size: int = 49408
    hf_tokenizer_name: str | None = None
    tokenizer_mode: str | None = None
    tokenizer_kwargs: Mapping[str, Any] | None = _mapping_field()
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    ls_init_value: float | None = None
    embed_cls: bool = False
    pad_id: int = 0
    eos_id: int = 2
    no_causal_mask: bool = False
    final_ln_after_pool: bool = False
    pool_type: str = "argmax"
    proj_bias: bool = False
    proj_type: str = "linear"
    output_tokens: bool = False
    act_kwargs: Mapping[str, Any] | None = _mapping_field()
    norm_kwargs: Mapping[str, Any] | None = _mapping_field()
    block_type: str | None = None
    qk_norm: bool = False
    scaled_cosine_attn: bool = False
    scale_heads: bool = False
    scale_attn_inner: bool = False
    scale_attn: bool = False
    scale_fc: bool = False
    hf_model_name: str | None = None
    hf_model_pretrained: bool = True
    hf_proj_type: str | None = "mlp"
    hf_pooler_type: str = "mean_pooler"

    def __post_init__(self) -> None:
        _normalise_fields(self, floats=("mlp_ratio",))
        _validate(self, _TEXT_RULES, "text")
        if self.kind == "transformer":
            _require(
                self.width % self.heads == 0,
                f"text.width = {self.width} is not divisible by text.heads = {self.heads}",
                fix="choose a head count that divides the width",
            )
            _require(
                self.mlp_width >= 1,
                f"text.mlp_ratio = {self.mlp_ratio} gives an MLP of width {self.mlp_width}",
                fix="use an mlp_ratio with int(width * mlp_ratio) >= 1",
            )
            _require(
                not (self.qk_norm and self.scaled_cosine_attn),
                "text.qk_norm and text.scaled_cosine_attn are both on",
                fix="turn one of them off (the reference allows only one)",
            )

    @property
    def kind(self) -> str:
        """'hf' (a Hugging Face encoder) or 'transformer' (the native CLIP text transformer)."""
        return "hf" if self.hf_model_name else "transformer"

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def num_positions(self) -> int:
        """Rows of the positional embedding: the context, plus one for an appended class token."""
        return self.context_length + (1 if self.embed_cls else 0)

    @property
    def uses_custom_block(self) -> bool:
        # OpenCLIP picks the custom block when asked to, or by default when a custom feature is on;
        # an explicit block_type='default' keeps the default block (and ignores the flags).
        flags = any(getattr(self, f) for f in CUSTOM_BLOCK_FLAGS)
        return self.block_type == "custom" or (self.block_type is None and flags)


_TEXT_RULES: dict[str, Callable[[Any], str | None]] = {
    "context_length": _positive_int,
    "vocab_size": _positive_int,
    "hf_tokenizer_name": _optional_str,
    "tokenizer_mode": _optional_str,
    "tokenizer_kwargs": _optional_mapping,
    "width": _positive_int,
    "heads": _positive_int,
    "layers": _positive_int,
    "mlp_ratio": _positive_real,
    "ls_init_value": _optional_real,
    "embed_cls": _bool,
    "pad_id": _non_negative_int,
    "eos_id": _non_negative_int,
    "no_causal_mask": _bool,
    "final_ln_after_pool": _bool,
    "pool_type": _one_of(TEXT_POOL_TYPES),
    "proj_bias": _bool,
    "proj_type": _one_of(TEXT_PROJ_TYPES),
    "output_tokens": _bool,
    "act_kwargs": _act_kwargs,
    "norm_kwargs": _norm_kwargs,
    "block_type": _one_of(BLOCK_TYPES),
    **{flag: _bool for flag in CUSTOM_BLOCK_FLAGS},
    "hf_model_name": _optional_str,
    "hf_model_pretrained": _bool,
    "hf_proj_type": _one_of(HF_PROJ_TYPES),
    "hf_pooler_type": _one_of(HF_POOLER_TYPES),
}


# --- the whole model -----------------------------------------------------------------------------------------------

DEFAULT_LOGIT_SCALE = math.log(1 / 0.07)


@dataclass(frozen=True)
class ClipConfig:
    """A whole CLIP: the two towers, the joint embedding width and the model-level options.

    `assumed` is not part of the architecture: when a config comes from `spec.infer_config`, it lists the
    fields (dotted paths such as ``"vision.head_width"``) whose values are defaults or registry guesses
    rather than facts read from the tensors. It is ignored by ``==``.
    """

    embed_dim: int
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    quick_gelu: bool = False
    init_logit_scale: float = DEFAULT_LOGIT_SCALE
    init_logit_bias: float | None = None
    nonscalar_logit_scale: bool = False
    cast_dtype: str | None = None
    custom_text: bool = False
    multimodal: Mapping[str, Any] | None = _mapping_field()
    assumed: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.vision, Mapping):
            object.__setattr__(self, "vision", VisionConfig(**self.vision))
        if isinstance(self.text, Mapping):
            object.__setattr__(self, "text", TextConfig(**self.text))
        _normalise_fields(self, floats=("init_logit_scale",))
        _validate(self, _CLIP_RULES, "config")
        _require(
            not self.text.embed_cls or self.text_prefix == "text.",
            "text.embed_cls needs OpenCLIP's custom text layout: its flat CLIP layout drops the class token",
            fix="set custom_text = True, or embed_cls = False",
        )
        _require(
            not (self.quick_gelu and (self.vision.act_kwargs or self.text.act_kwargs)),
            "act_kwargs are set but quick_gelu = True: QuickGELU takes no arguments",
            fix="drop act_kwargs, or set quick_gelu = False (GELU takes approximate='tanh')",
        )
        _require(
            self.text.kind != "transformer" or self.text.proj_type != "none" or self.text.width == self.embed_dim,
            f"text.proj_type = 'none' but text.width = {self.text.width} differs from embed_dim = {self.embed_dim}: "
            "without a projection the text features are the joint embedding",
            fix="set embed_dim to the text width, or use text.proj_type = 'linear'",
        )
        v = self.vision
        _require(
            v.kind != "vit" or not isinstance(v.attentional_pool, str) or v.width == self.embed_dim,
            f"vision.attentional_pool = {v.attentional_pool!r} needs vision.width ({v.width}) == embed_dim "
            f"({self.embed_dim}): the reference's two-pooler forms cannot run otherwise",
            fix="use attentional_pool = True, or equal widths",
        )
        if v.kind == "vit" and v.attentional_pool:
            _require(
                self.embed_dim % v.attn_pooler_heads == 0,
                f"embed_dim = {self.embed_dim} is not divisible by vision.attn_pooler_heads = "
                f"{v.attn_pooler_heads}",
                fix="choose attn_pooler_heads that divides embed_dim (the pooler works at embed_dim)",
            )

    @property
    def is_coca(self) -> bool:
        return self.multimodal is not None

    @property
    def text_prefix(self) -> str:
        """Where the text tower's keys live: OpenAI's flat layout, or `text.` (OpenCLIP's CustomTextCLIP).

        OpenCLIP builds a Hugging Face text tower in the custom layout even without `custom_text`.
        """
        return "text." if self.custom_text or self.text.kind == "hf" else ""

    def replace(self, **changes: Any) -> ClipConfig:
        """A copy with some fields changed; `vision`/`text` may be mappings of their own changes."""
        for tower in ("vision", "text"):
            if isinstance(changes.get(tower), Mapping):
                changes[tower] = dataclasses.replace(getattr(self, tower), **changes[tower])
        return dataclasses.replace(self, **changes)

    # OpenCLIP JSON -------------------------------------------------------------------------------------------------

    @classmethod
    def from_openclip(cls, cfg: Mapping[str, Any]) -> ClipConfig:
        """Parse an OpenCLIP model config (the JSON schema of `open_clip/model_configs/*.json`).

        Unknown keys are an error, not silently dropped; a hub-style file with `model_cfg` is unwrapped.
        """
        if not isinstance(cfg, Mapping):
            raise ConfigError(
                f"an OpenCLIP model config must be a JSON object, got {type(cfg).__name__}",
                fix="pass the parsed JSON dict (keys embed_dim, vision_cfg, text_cfg, ...)",
            )
        if "model_cfg" in cfg:
            cfg = cfg["model_cfg"]
        known = {_OPENCLIP_TOP_LEVEL.get(f.name, f.name) for f in dataclasses.fields(cls)} - {"assumed"}
        _reject_unknown(cfg, known, "the model config")
        if "embed_dim" not in cfg:
            raise ConfigError("the model config has no 'embed_dim'", fix="add the joint embedding width 'embed_dim'")
        vision = _tower_from_dict(VisionConfig, cfg.get("vision_cfg", {}), "vision_cfg")
        text = _tower_from_dict(TextConfig, cfg.get("text_cfg", {}), "text_cfg")
        extra = {f: cfg[k] for f, k in _OPENCLIP_TOP_LEVEL.items() if k in cfg and f not in ("vision", "text")}
        plain = {k: v for k, v in cfg.items() if k not in _OPENCLIP_TOP_LEVEL.values()}
        return cls(vision=vision, text=text, **plain, **extra)

    def to_openclip(self) -> dict[str, Any]:
        """The OpenCLIP JSON form: fields equal to OpenCLIP's defaults are left out, like the shipped files."""
        out: dict[str, Any] = {"embed_dim": self.embed_dim}
        out["vision_cfg"] = _tower_to_dict(self.vision)
        out["text_cfg"] = _tower_to_dict(self.text)
        defaults = {f.name: f for f in dataclasses.fields(self)}
        for name, f in defaults.items():
            if name in ("embed_dim", "vision", "text", "assumed"):
                continue
            value = getattr(self, name)
            if value != f.default:
                out[_OPENCLIP_TOP_LEVEL.get(name, name)] = _thaw(value)
        return out


_CLIP_RULES: dict[str, Callable[[Any], str | None]] = {
    "embed_dim": _positive_int,
    "quick_gelu": _bool,
    "init_logit_scale": lambda v: None if _is_real(v) else "a finite number",
    "init_logit_bias": _optional_real,
    "nonscalar_logit_scale": _bool,
    "cast_dtype": _one_of(CAST_DTYPES),
    "custom_text": _bool,
    "multimodal": _optional_mapping,
    "vision": lambda v: None if isinstance(v, VisionConfig) else "a VisionConfig",
    "text": lambda v: None if isinstance(v, TextConfig) else "a TextConfig",
}

# Our field name -> OpenCLIP's JSON key, where they differ.
_OPENCLIP_TOP_LEVEL = {"vision": "vision_cfg", "text": "text_cfg", "multimodal": "multimodal_cfg"}


def _reject_unknown(cfg: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys {unknown}",
            fix=f"remove them or fix their spelling; known keys are {sorted(known)}",
        )


def _tower_from_dict(cls: type, cfg: Any, where: str) -> Any:
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{where} must be a JSON object, got {type(cfg).__name__}", fix=f"make {where} a dict")
    _reject_unknown(cfg, {f.name for f in dataclasses.fields(cls)}, where)
    return cls(**cfg)


def _tower_to_dict(tower: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(tower):
        value = getattr(tower, f.name)
        if value != f.default:
            out[f.name] = _thaw(value)
    return out


# --- preprocessing -------------------------------------------------------------------------------------------------

RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images are turned into model input: OpenCLIP's `preprocess_cfg` with OpenAI's values as defaults."""

    image_size: int | tuple[int, int] = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    def __post_init__(self) -> None:
        _normalise_fields(self)
        triple = lambda v: (
            None if isinstance(v, tuple) and len(v) == 3 and all(_is_real(x) for x in v) else "three numbers"
        )
        _validate(
            self,
            {
                "image_size": _size,
                "mean": triple,
                "std": lambda v: triple(v) or (None if all(x > 0 for x in v) else "three positive numbers"),
                "interpolation": _one_of(INTERPOLATIONS),
                "resize_mode": _one_of(RESIZE_MODES),
                "fill_color": lambda v: None if _is_int(v) and 0 <= v <= 255 else "an integer in [0, 255]",
            },
            "preprocess",
        )
