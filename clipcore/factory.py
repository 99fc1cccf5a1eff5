"""OpenCLIP's entry points: `create_model`, `create_model_and_transforms`, `create_model_from_pretrained`,
`get_tokenizer`, `list_models`, `add_model_config`, `list_pretrained`, with open_clip 3.3.0's arguments.

    model, preprocess_train, preprocess_val = clipcore.create_model_and_transforms(
        "ViT-B-32", pretrained="laion2b_s34b_b79k")       # the file must already be on this machine
    tokenizer = clipcore.get_tokenizer("ViT-B-32")

A model name is a config name (`list_models()`, '/' read as '-'), 'hf-hub:<org>/<name>' (its
open_clip_config.json and weights in the local Hugging Face cache) or 'local-dir:<folder>' (the same files in
a folder). `pretrained` is a registry tag (`list_pretrained()`: the file is looked up in the local hub cache
and URL caches, see clipcore.hub) or a checkpoint path. Nothing is ever downloaded: a missing file raises
OfflineError saying where it belongs.

What follows the reference: the config overrides (`force_*`, then `model_kwargs` replacing whole top-level
config entries), the QuickGELU-mismatch warning, the precision modes, a model returned in training mode, the
preprocessing config on `model.visual.preprocess_cfg`, and OpenCLIP's forward: `model(image, text)` returns
`(image_features, text_features, logit_scale.exp()[, logit_bias])`, or a dict with `output_dict=True`.
Where the reference fails late or silently (an unknown precision, an unknown name for a tokenizer), clipcore
raises a clipcore error instead.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipcore.checkpoint import Checkpoint, open_checkpoint
from clipcore.errors import CheckpointError, ConfigError, ShapeError, UnknownModelError
from clipcore.hub import find_hub_model, find_pretrained
from clipcore.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from clipcore.towers import CLIP, build_model
from clipcore.transform_train import AugmentationCfg, TrainTransform
from spec import ClipConfig, get_model_config
from spec.pretrained import HF_CONFIG_NAME, get_pretrained_cfg, list_pretrained
from spec.registry import add_model_config, list_models

__all__ = [
    "PRECISIONS",
    "OpenCLIPModel",
    "add_model_config",
    "create_model",
    "create_model_and_transforms",
    "create_model_from_pretrained",
    "get_tokenizer",
    "list_models",
    "list_pretrained",
]

HF_HUB_PREFIX, LOCAL_DIR_PREFIX = "hf-hub:", "local-dir:"

# precision -> (which tensors get the low-precision dtype, that dtype). 'mixed' is OpenAI's layout
# (backends/precision.py: convolutions, linear layers, projections; norms, embeddings, logit scale stay
# float32); 'pure' casts everything; the amp modes keep float32 weights (autocast is the caller's).
PRECISIONS: dict[str, tuple[str, torch.dtype]] = {
    "fp32": ("none", torch.float32),
    "amp": ("none", torch.float32),
    "amp_bf16": ("none", torch.float32),
    "amp_bfloat16": ("none", torch.float32),
    "fp16": ("mixed", torch.float16),
    "bf16": ("mixed", torch.bfloat16),
    "pure_fp16": ("pure", torch.float16),
    "pure_bf16": ("pure", torch.bfloat16),
}

# OpenCLIP's PreprocessCfg defaults (the `size` is the model's).
PREPROCESS_DEFAULTS = {"size": 224, "mode": "RGB", "mean": OPENAI_MEAN, "std": OPENAI_STD,
                       "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
# Keys an OpenAI TorchScript archive or an old transformers text tower carries that no model here has.
IGNORED_CHECKPOINT_KEYS = ("input_resolution", "context_length", "vocab_size",
                           "text.transformer.embeddings.position_ids")


class OpenCLIPModel(CLIP):
    """clipcore's CLIP with OpenCLIP's forward and `get_logits` (what `create_model` returns)."""

    output_dict: bool = False

    def forward(self, image: torch.Tensor | None = None, text: torch.Tensor | None = None) -> Any:
        """Normalised features and the exponentiated logit scale (and bias), as OpenCLIP's CLIP returns them."""
        image_features = self.encode_image(image, normalize=True) if image is not None else None
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        outputs = {"image_features": image_features, "text_features": text_features,
                   "logit_scale": self.logit_scale.exp()}
        if self.logit_bias is not None:
            outputs["logit_bias"] = self.logit_bias
        return outputs if self.output_dict else tuple(outputs.values())

    def get_logits(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits per image, logits per text): OpenAI's CLIP forward."""
        return CLIP.forward(self, image, text)


_OPENCLIP_CLASSES: dict[type, type] = {CLIP: OpenCLIPModel}


def _as_openclip_model(model: CLIP) -> OpenCLIPModel:
    """Give `model` OpenCLIP's forward, in place (a subclass of its own class; its state is untouched)."""
    base = type(model)
    if base not in _OPENCLIP_CLASSES:
        _OPENCLIP_CLASSES[base] = type(base.__name__, (OpenCLIPModel, base), {"__module__": base.__module__})
    model.__class__ = _OPENCLIP_CLASSES[base]
    return model  # type: ignore[return-value]


# --- what a model name and `pretrained` resolve to ---------------------------------------------------------------


@dataclass
class Source:
    """A model name resolved: its OpenCLIP JSON config, a checkpoint file (or None) and preprocessing."""

    model_cfg: dict[str, Any]
    checkpoint: Path | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    expected_quick_gelu: bool | None = None  # what a registry tag's weights were trained with


def _read_json_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) of an open_clip_config.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data["model_cfg"]), dict(data.get("preprocess_cfg") or {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path} is not a valid OpenCLIP model config ({type(e).__name__}: {e})",
                          fix="it must be JSON with a 'model_cfg' object (and optionally 'preprocess_cfg')") from None


def _local_dir_checkpoint(folder: Path) -> Path | None:
    """The reference's choice of weights in a folder: preferred names first, else the first file found."""
    preferred = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "pytorch_model.pth",
                 "model.pth")
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for pattern in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(pattern))
    return found[0] if found else None


def _from_local_dir(folder: str) -> Source:
    path = Path(folder).expanduser()
    if not (path / HF_CONFIG_NAME).is_file():
        raise ConfigError(f"local-dir:{folder}: no {HF_CONFIG_NAME} in {path}",
                          fix="point at a folder written by OpenCLIP's save_for_hf (config and weights)")
    model_cfg, preprocess = _read_json_config(path / HF_CONFIG_NAME)
    return Source(model_cfg, _local_dir_checkpoint(path), preprocess)


def _from_hub(repo: str, cache_dir: str | os.PathLike | None) -> Source:
    config_path, weights = find_hub_model(repo, cache_dir)
    model_cfg, preprocess = _read_json_config(config_path)
    return Source(model_cfg, weights, preprocess)


def _from_registry(name: str | ClipConfig, pretrained: str | os.PathLike | None,
                   cache_dir: str | os.PathLike | None) -> Source:
    config = name if isinstance(name, ClipConfig) else get_model_config(name)
    source = Source(config.to_openclip())
    if not pretrained:
        return source
    tag = get_pretrained_cfg(name.replace("/", "-"), os.fspath(pretrained)) if isinstance(name, str) else None
    if tag is not None:  # a tag wins over a file of the same name, as in the reference
        source.checkpoint = find_pretrained(tag, cache_dir)
        source.preprocess = tag.preprocess
        source.expected_quick_gelu = tag.quick_gelu
    elif os.path.isfile(pretrained):
        source.checkpoint = Path(pretrained)
    else:
        tags = get_pretrained_tags(name) if isinstance(name, str) else []
        raise UnknownModelError(f"pretrained={os.fspath(pretrained)!r} is neither a tag of {name!r} nor a file",
                                fix=f"use one of its tags {tags}, or the path of a checkpoint file")
    return source


def get_pretrained_tags(name: str) -> list[str]:
    return [t for m, t in list_pretrained() if m == name.replace("/", "-")]


def resolve_model(model_name: str | ClipConfig, pretrained: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None) -> Source:
    """What `model_name` (and `pretrained`) stand for, without building anything."""
    if isinstance(model_name, str) and model_name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        schema, _, ident = model_name.partition(":")
        if not ident:
            raise ConfigError(f"model name {model_name!r} names nothing after {schema}:")
        if pretrained:
            warnings.warn(f"pretrained={pretrained!r} is ignored: {model_name!r} brings its own weights", stacklevel=3)
        return _from_hub(ident, cache_dir) if schema == "hf-hub" else _from_local_dir(ident)
    if not isinstance(model_name, (str, ClipConfig)):
        raise ConfigError(f"model_name must be a string or a ClipConfig, got {type(model_name).__name__}")
    return _from_registry(model_name, pretrained, cache_dir)


# --- the config, as the reference edits it ---------------------------------------------------------------------


def apply_overrides(
    model_cfg: dict[str, Any],
    *,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_context_length: int | None = None,
    pretrained_image: bool = False,
    pretrained_text: bool = True,
    model_kwargs: dict[str, Any] | None = None,
) -> ClipConfig:
    """The config the reference builds: `force_*` set fields, then `model_kwargs` replace top-level entries."""
    cfg = {**model_cfg, "vision_cfg": dict(model_cfg.get("vision_cfg", {})),
           "text_cfg": dict(model_cfg.get("text_cfg", {}))}
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if force_quick_gelu:
        cfg["quick_gelu"] = True
    if force_custom_text:
        cfg["custom_text"] = True
    if force_patch_dropout is not None:
        vision["patch_dropout"] = force_patch_dropout
    if force_image_size is not None:
        vision["image_size"] = tuple(force_image_size) if isinstance(force_image_size, list) else force_image_size
    if force_context_length is not None:
        text["context_length"] = force_context_length
    # The towers' base weights follow the factory's arguments, not the JSON (as in the reference).
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = pretrained_image
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = pretrained_text
    cfg.update(model_kwargs or {})
    return ClipConfig.from_openclip(cfg)


# --- weights and precision -------------------------------------------------------------------------------------


def dtype_rule(config: ClipConfig, precision: str):
    """key -> dtype for `precision` (see PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}", fix=f"use one of {list(PRECISIONS)}")
    kind, dtype = PRECISIONS[precision]
    if kind != "mixed":
        return lambda key: dtype
    from backends.precision import half_keys  # the facade may reach the backends; `import clipcore` stays light

    half = half_keys(config)
    return lambda key: dtype if key in half else torch.float32


def _checkpoint_key(key: str, available: set[str]) -> str | None:
    """Where `key` is in a checkpoint: itself, or (an old CLIP-layout file loaded into the `text.` layout) the
    same key without `text.`, as the reference converts it."""
    if key in available:
        return key
    if key.startswith("text.") and key[5:] in available:
        return key[5:]
    return None


def fit_positions(model: CLIP, key: str, table: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """A position table resized to `shape` as OpenCLIP's `load_checkpoint` does (so that `force_image_size`
    and `force_context_length` work with pretrained weights); None where `key` is no resizable table.

    The image grid is interpolated bicubically (antialiased) from a square grid, the class token kept as it is;
    the text positions linearly. Only the number of positions may change, never the width. The arithmetic is
    float32's (what the reference computes for float32 files; for half-precision ones torch's CPU kernels have
    no bicubic), and the result has the file's dtype.
    """
    if table.ndim != 2 or len(shape) != 2 or table.shape[1] != shape[1]:
        return None
    fitted = _fit_positions(model, key, table.float(), shape)
    return None if fitted is None else fitted.to(table.dtype)


def _fit_positions(model: CLIP, key: str, table: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    width = shape[1]
    if key == "visual.positional_embedding":
        grid = getattr(model.visual, "grid_size", None)  # ViT towers only, as in the reference
        side = math.isqrt(table.shape[0] - 1)
        if grid is None or side * side != table.shape[0] - 1:
            return None
        patches = table[1:].reshape(1, side, side, width).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", antialias=True, align_corners=False)
        return torch.cat([table[:1], patches.permute(0, 2, 3, 1).reshape(-1, width)])
    if key in ("positional_embedding", "text.positional_embedding"):
        rows = table.reshape(1, table.shape[0], width).permute(0, 2, 1)
        rows = F.interpolate(rows, size=shape[0], mode="linear", antialias=False, align_corners=False)
        return rows.permute(0, 2, 1)[0].contiguous()
    return None


def read_state(model: CLIP, checkpoint: Checkpoint, rule, device: torch.device) -> dict[str, torch.Tensor]:
    """`model`'s state dict from `checkpoint`, every key and shape checked, in the dtypes `rule` gives."""
    wanted = model.state_dict()
    available = set(checkpoint.keys())
    state, used, missing, wrong = {}, set(), [], []
    for key, like in wanted.items():
        source = _checkpoint_key(key, available)
        if source is None:
            if key == "logit_bias":  # a CLIP checkpoint into a model with a bias: the reference starts it at 0
                state[key] = torch.zeros(like.shape, dtype=rule(key), device=device)
            else:
                missing.append(key)
            continue
        used.add(source)
        tensor = checkpoint.get(source, rule(key) if like.is_floating_point() else None)
        if tuple(tensor.shape) != tuple(like.shape):
            if tensor.numel() == like.numel() == 1:  # scalar vs [1] logit scale/bias, reshaped as the reference
                tensor = tensor.reshape(like.shape)
            elif (fitted := fit_positions(model, key, checkpoint.get(source), tuple(like.shape))) is not None:
                tensor = fitted.to(rule(key))  # fitted in the stored dtype, as the reference does
            else:
                wrong.append(f"{key}: file {tuple(tensor.shape)}, model {tuple(like.shape)}")
                continue
        state[key] = tensor.to(device)
    unexpected = sorted(available - used - set(IGNORED_CHECKPOINT_KEYS))
    if missing or unexpected or wrong:
        problems = [f"{len(missing)} missing keys {missing[:5]}" if missing else "",
                    f"{len(unexpected)} unexpected keys {unexpected[:5]}" if unexpected else "",
                    f"{len(wrong)} shapes differ ({'; '.join(wrong[:3])})" if wrong else ""]
        raise ShapeError(
            f"{checkpoint.path.name} does not fit this model config: " + ", ".join(p for p in problems if p),
            fix="use the model config these weights were trained with (or clipcore.load, which infers it)",
        )
    return state


def _build(config: ClipConfig, checkpoint_path: Path | None, device: torch.device, rule) -> CLIP:
    if checkpoint_path is None:
        model = build_model(config, device=device)
        model.init_weights()
        state = {k: v.to(rule(k)) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    else:
        model = build_model(config, device="meta")
        with open_checkpoint(checkpoint_path) as checkpoint:
            state = read_state(model, checkpoint, rule, device)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _preprocess_cfg(model: CLIP, source: Source, force: dict[str, Any] | None) -> dict[str, Any]:
    """OpenCLIP's preprocess config: defaults, the weights' own, the model's size, then `force`."""
    cfg = {**PREPROCESS_DEFAULTS, **{k: v for k, v in source.preprocess.items() if k in PREPROCESS_DEFAULTS}}
    size = getattr(model.visual, "image_size", None)
    if size is not None:
        cfg["size"] = size
    cfg.update({k: v for k, v in (force or {}).items() if k in PREPROCESS_DEFAULTS and v is not None})
    return cfg


# --- the entry points ------------------------------------------------------------------------------------------


def create_model(
    model_name: str | ClipConfig,
    pretrained: str | os.PathLike | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_preprocess_cfg: dict[str, Any] | None = None,
    force_context_length: int | None = None,
    pretrained_image: bool = False,
    pretrained_hf: bool = True,
    cache_dir: str | os.PathLike | None = None,
    output_dict: bool | None = None,
    require_pretrained: bool = False,
    load_weights: bool = True,
    **model_kwargs: Any,
) -> OpenCLIPModel:
    """OpenCLIP's `create_model`: the model `model_name` names, with `pretrained` weights (a tag or a path).

    Without weights the model gets the reference's random initialisation. The model is returned in training
    mode, as OpenCLIP returns it (call `.eval()` for inference). `model_name` may also be a `ClipConfig`.
    `pretrained_text` is accepted as the newer name of `pretrained_hf`.
    """
    pretrained_text = model_kwargs.pop("pretrained_text", pretrained_hf)
    model_kwargs.pop("weights_only", None)  # clipcore's readers never unpickle arbitrary objects anyway
    source = resolve_model(model_name, pretrained, cache_dir)
    if not load_weights:
        source.checkpoint = None
    config = apply_overrides(
        source.model_cfg, force_quick_gelu=force_quick_gelu, force_custom_text=force_custom_text,
        force_patch_dropout=force_patch_dropout, force_image_size=force_image_size,
        force_context_length=force_context_length, pretrained_image=pretrained_image and source.checkpoint is None,
        pretrained_text=pretrained_text and source.checkpoint is None, model_kwargs=model_kwargs,
    )
    if source.expected_quick_gelu is not None and source.expected_quick_gelu != source.model_cfg.get(
            "quick_gelu", False) and not force_quick_gelu:
        warnings.warn(
            f"QuickGELU mismatch: the {pretrained!r} weights of {model_name!r} were trained with "
            f"{'QuickGELU' if source.expected_quick_gelu else 'GELU'}, the config uses "
            f"{'QuickGELU' if source.model_cfg.get('quick_gelu') else 'GELU'}; use the '-quickgelu' config or "
            "force_quick_gelu=True", UserWarning, stacklevel=2)
    if require_pretrained and source.checkpoint is None:
        raise CheckpointError(f"require_pretrained=True but no weights were found for {model_name!r} "
                              f"(pretrained={pretrained!r})", fix="pass a registry tag or a checkpoint path")
    model = _build(config, source.checkpoint, torch.device(device), dtype_rule(config, precision))
    model = _as_openclip_model(model).train()
    if output_dict:
        model.output_dict = True
    preprocess = _preprocess_cfg(model, source, force_preprocess_cfg)
    model.visual.preprocess_cfg = preprocess
    model.visual.image_mean, model.visual.image_std = preprocess["mean"], preprocess["std"]
    if jit:
        try:
            model = torch.jit.script(model)
        except Exception as e:  # the reference keeps the eager model, with a warning
            warnings.warn(f"jit=True: scripting failed ({type(e).__name__}); returning the eager model",
                          stacklevel=2)
    return model


def _force_preprocess(image_mean: Any, image_std: Any, image_interpolation: Any, image_resize_mode: Any) -> dict:
    chosen = {"mean": image_mean, "std": image_std, "interpolation": image_interpolation,
              "resize_mode": image_resize_mode}
    return {k: v for k, v in chosen.items() if v is not None}


def create_model_and_transforms(
    model_name: str | ClipConfig,
    pretrained: str | os.PathLike | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_patch_dropout: float | None = None,
    force_image_size: int | tuple[int, int] | None = None,
    force_context_length: int | None = None,
    image_mean: Any = None,
    image_std: Any = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    aug_cfg: AugmentationCfg | dict[str, Any] | None = None,
    pretrained_image: bool = False,
    pretrained_hf: bool = True,
    cache_dir: str | os.PathLike | None = None,
    output_dict: bool | None = None,
    **model_kwargs: Any,
) -> tuple[OpenCLIPModel, TrainTransform, Preprocess]:
    """(model, preprocess_train, preprocess_val), as OpenCLIP returns them."""
    model = create_model(
        model_name, pretrained, precision=precision, device=device, jit=jit, force_quick_gelu=force_quick_gelu,
        force_custom_text=force_custom_text, force_patch_dropout=force_patch_dropout,
        force_image_size=force_image_size, force_context_length=force_context_length,
        force_preprocess_cfg=_force_preprocess(image_mean, image_std, image_interpolation, image_resize_mode),
        pretrained_image=pretrained_image, pretrained_hf=pretrained_hf, cache_dir=cache_dir,
        output_dict=output_dict, **model_kwargs,
    )
    return model, *transforms_for(model.visual.preprocess_cfg, aug_cfg)


def transforms_for(preprocess_cfg: dict[str, Any], aug_cfg: Any = None) -> tuple[TrainTransform, Preprocess]:
    """(train, val) transforms for an OpenCLIP preprocess config; the train one ignores the resize settings,
    as the reference's does."""
    train = TrainTransform(preprocess_cfg["size"], preprocess_cfg["mean"], preprocess_cfg["std"], aug_cfg)
    return train, Preprocess.from_config(preprocess_cfg)


def create_model_from_pretrained(
    model_name: str | ClipConfig,
    pretrained: str | os.PathLike | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    jit: bool = False,
    force_quick_gelu: bool = False,
    force_custom_text: bool = False,
    force_image_size: int | tuple[int, int] | None = None,
    image_mean: Any = None,
    image_std: Any = None,
    image_interpolation: str | None = None,
    image_resize_mode: str | None = None,
    return_transform: bool = True,
    cache_dir: str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> OpenCLIPModel | tuple[OpenCLIPModel, Preprocess]:
    """A model that must get pretrained weights; with `return_transform`, `(model, preprocess_val)`."""
    model = create_model(
        model_name, pretrained, precision=precision, device=device, jit=jit, force_quick_gelu=force_quick_gelu,
        force_custom_text=force_custom_text, force_image_size=force_image_size,
        force_preprocess_cfg=_force_preprocess(image_mean, image_std, image_interpolation, image_resize_mode),
        cache_dir=cache_dir, require_pretrained=True, **model_kwargs,
    )
    if not return_transform:
        return model
    return model, Preprocess.from_config(model.visual.preprocess_cfg)


def get_tokenizer(
    model_name: str = "", context_length: int | None = None, cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
):
    """The tokenizer a model config asks for: a Hugging Face one (`hf_tokenizer_name`, needs the `hf` extra
    and the files on this machine) or CLIP's BPE tokenizer, at the config's context length."""
    from clipcore.hf_tokenizer import HFTokenizer, OpenCLIPTokenizer

    hf_source: str | None = None
    if model_name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        source = resolve_model(model_name, None, cache_dir)
        text_cfg = source.model_cfg.get("text_cfg", {})
        if model_name.startswith(LOCAL_DIR_PREFIX) and text_cfg.get("hf_tokenizer_name"):
            hf_source = model_name.partition(":")[2]  # a local folder holds its own tokenizer files
    elif model_name:
        text_cfg = get_model_config(model_name).to_openclip().get("text_cfg", {})
    else:
        text_cfg = {}
    context_length = context_length or text_cfg.get("context_length") or 77
    options = {**(text_cfg.get("tokenizer_kwargs") or {}), **kwargs}
    name = hf_source or text_cfg.get("hf_tokenizer_name")
    if name:
        return HFTokenizer(name, context_length, cache_dir=cache_dir, tokenizer_mode=text_cfg.get("tokenizer_mode"),
                           **options)
    return OpenCLIPTokenizer(context_length, **options)
