"""`shapes_of(config)`: the exact state-dict keys and tensor shapes a config produces.

The keys follow OpenAI's and OpenCLIP's layout (the image tower under `visual.`, the text tower at the top
level, or under `text.` for OpenCLIP's CustomTextCLIP), in the order the reference modules register them.
Pure Python: this is what `infer_config` is checked against, and what a loader compares a file with before
reading a single tensor.
"""

from __future__ import annotations

from functools import lru_cache

from spec.config import ClipConfig, TextConfig, VisionConfig
from spec.errors import UnsupportedModelError

__all__ = ["Shapes", "shapes_of"]

Shapes = dict[str, tuple[int, ...]]


def shapes_of(config: ClipConfig) -> Shapes:
    """Every state-dict key of the model `config` describes, with its shape."""
    return dict(_shapes_of(config))  # a copy: the caller may change it


@lru_cache(maxsize=64)  # configs are frozen; one load asks for the same config's shapes several times
def _shapes_of(config: ClipConfig) -> Shapes:
    if config.is_coca:
        raise UnsupportedModelError(
            "CoCa models (a config with multimodal_cfg) are not CLIP models; clipcore does not build them",
            fix="use a CLIP config (no multimodal_cfg)",
        )
    out: Shapes = {}
    out.update(_prefixed("visual.", _vision(config.vision, config.embed_dim)))
    out.update(_prefixed(config.text_prefix, _text(config.text, config.embed_dim)))
    scale_shape = (1,) if config.nonscalar_logit_scale else ()
    out["logit_scale"] = scale_shape
    if config.init_logit_bias is not None:
        out["logit_bias"] = scale_shape
    return out


def _prefixed(prefix: str, shapes: Shapes) -> Shapes:
    return {prefix + k: v for k, v in shapes.items()}


def _layer_norm(name: str, width: int) -> Shapes:
    return {f"{name}.weight": (width,), f"{name}.bias": (width,)}


def _linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> Shapes:
    out: Shapes = {f"{name}.weight": (fan_out, fan_in)}
    if bias:
        out[f"{name}.bias"] = (fan_out,)
    return out


def _block(tower: VisionConfig | TextConfig, width: int, heads: int) -> Shapes:
    """One residual attention block (OpenCLIP's default or custom block: same names, optional extras)."""
    head_width = width // heads
    mlp = tower.mlp_width
    custom = tower.uses_custom_block
    out: Shapes = {}
    out.update(_layer_norm("ln_1", width))
    out["attn.in_proj_weight"] = (3 * width, width)
    out["attn.in_proj_bias"] = (3 * width,)
    if custom and tower.scaled_cosine_attn:
        out["attn.logit_scale"] = (heads, 1, 1)
    if custom and tower.scale_heads:
        out["attn.head_scale"] = (heads, 1, 1)
    if custom and tower.qk_norm:
        out.update(_layer_norm("attn.ln_q", head_width))
        out.update(_layer_norm("attn.ln_k", head_width))
    if custom and tower.scale_attn_inner:
        out.update(_layer_norm("attn.ln_inner", width))
    out.update(_linear("attn.out_proj", width, width))
    if custom and tower.scale_attn:
        out.update(_layer_norm("ln_attn", width))
    if tower.ls_init_value is not None:
        out["ls_1.gamma"] = (width,)
    out.update(_layer_norm("ln_2", width))
    out.update(_linear("mlp.c_fc", width, mlp))
    if custom and tower.scale_fc:
        out.update(_layer_norm("mlp.ln", mlp))
    out.update(_linear("mlp.c_proj", mlp, width))
    if tower.ls_init_value is not None:
        out["ls_2.gamma"] = (width,)
    return out


def _transformer(tower: VisionConfig | TextConfig, width: int, layers: int, heads: int) -> Shapes:
    out: Shapes = {}
    for i in range(layers):
        out.update(_prefixed(f"transformer.resblocks.{i}.", _block(tower, width, heads)))
    return out


def _attentional_pooler(name: str, d_model: int, context_dim: int, queries: int) -> Shapes:
    # torch's MultiheadAttention keeps one fused in-projection only when key/value width equals the model width.
    out: Shapes = {f"{name}.query": (queries, d_model)}
    if context_dim == d_model:
        out[f"{name}.attn.in_proj_weight"] = (3 * d_model, d_model)
    else:
        out[f"{name}.attn.q_proj_weight"] = (d_model, d_model)
        out[f"{name}.attn.k_proj_weight"] = (d_model, context_dim)
        out[f"{name}.attn.v_proj_weight"] = (d_model, context_dim)
    out[f"{name}.attn.in_proj_bias"] = (3 * d_model,)
    out.update(_linear(f"{name}.attn.out_proj", d_model, d_model))
    out.update(_layer_norm(f"{name}.ln_q", d_model))
    out.update(_layer_norm(f"{name}.ln_k", context_dim))
    return out


def _vision(v: VisionConfig, embed_dim: int) -> Shapes:
    if v.kind == "timm":
        raise UnsupportedModelError(
            f"the shapes of a timm vision tower ({v.timm_model_name!r}) are defined by timm, not by the config",
            fix="build the model (clipcore.create_model) and read its state_dict instead",
        )
    return _resnet(v, embed_dim) if v.kind == "resnet" else _vit(v, embed_dim)


def _vit(v: VisionConfig, embed_dim: int) -> Shapes:
    w = v.width
    gh, gw = v.grid_size
    pool_dim = embed_dim if v.attentional_pool else w
    out: Shapes = {
        "class_embedding": (w,),
        "positional_embedding": (gh * gw + 1, w),
        "proj": (pool_dim, embed_dim),
        "conv1.weight": (w, 3, v.patch_size, v.patch_size),
    }
    if not v.no_ln_pre:
        out.update(_layer_norm("ln_pre", w))
    out.update(_transformer(v, w, v.layers, v.heads))
    if v.attentional_pool:
        out.update(_attentional_pooler("attn_pool", embed_dim, w, v.attn_pooler_queries))
        if isinstance(v.attentional_pool, str):  # CoCa's two-pooler forms
            out.update(_attentional_pooler("attn_pool_contrastive", embed_dim, w, 1))
    out.update(_layer_norm("ln_post", pool_dim))
    return out


def _batch_norm(name: str, width: int) -> Shapes:
    return {
        f"{name}.weight": (width,),
        f"{name}.bias": (width,),
        f"{name}.running_mean": (width,),
        f"{name}.running_var": (width,),
        f"{name}.num_batches_tracked": (),
    }


def _conv(name: str, c_in: int, c_out: int, k: int) -> Shapes:
    return {f"{name}.weight": (c_out, c_in, k, k)}


def _bottleneck(inplanes: int, planes: int, stride: int) -> Shapes:
    out: Shapes = {}
    out.update(_conv("conv1", inplanes, planes, 1))
    out.update(_batch_norm("bn1", planes))
    out.update(_conv("conv2", planes, planes, 3))
    out.update(_batch_norm("bn2", planes))
    out.update(_conv("conv3", planes, planes * 4, 1))
    out.update(_batch_norm("bn3", planes * 4))
    if stride > 1 or inplanes != planes * 4:
        out.update(_conv("downsample.0", inplanes, planes * 4, 1))
        out.update(_batch_norm("downsample.1", planes * 4))
    return out


def _resnet(v: VisionConfig, embed_dim: int) -> Shapes:
    w = v.width
    out: Shapes = {}
    out.update(_conv("conv1", 3, w // 2, 3))
    out.update(_batch_norm("bn1", w // 2))
    out.update(_conv("conv2", w // 2, w // 2, 3))
    out.update(_batch_norm("bn2", w // 2))
    out.update(_conv("conv3", w // 2, w, 3))
    out.update(_batch_norm("bn3", w))
    inplanes = w
    for stage, blocks in enumerate(v.layers):
        planes = w * 2**stage
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            out.update(_prefixed(f"layer{stage + 1}.{i}.", _bottleneck(inplanes, planes, stride)))
            inplanes = planes * 4
    feature_dim = w * 32
    grid = v.image_size // 32
    out["attnpool.positional_embedding"] = (grid * grid + 1, feature_dim)
    for proj in ("k_proj", "q_proj", "v_proj"):
        out.update(_linear(f"attnpool.{proj}", feature_dim, feature_dim))
    out.update(_linear("attnpool.c_proj", feature_dim, embed_dim))
    return out


def _text(t: TextConfig, embed_dim: int) -> Shapes:
    if t.kind == "hf":
        raise UnsupportedModelError(
            f"the shapes of a Hugging Face text tower ({t.hf_model_name!r}) are defined by transformers",
            fix="build the model (clipcore.create_model) and read its state_dict instead",
        )
    w = t.width
    out: Shapes = {"token_embedding.weight": (t.vocab_size, w)}
    if t.embed_cls:
        out["cls_emb"] = (w,)
    out["positional_embedding"] = (t.num_positions, w)
    out.update(_transformer(t, w, t.layers, t.heads))
    out.update(_layer_norm("ln_final", w))
    if t.proj_type != "none" and embed_dim:
        if t.proj_bias:
            out.update(_linear("text_projection", w, embed_dim))
        else:
            out["text_projection"] = (w, embed_dim)
    return out
