"""Hypothesis strategies for valid CLIP configs, small enough to build and run on a CPU in milliseconds.

They cover both image-tower kinds and every option of OpenCLIP's native towers that changes parameters or
numerics, so property and differential tests see the whole space rather than the nine OpenAI points.
"""

from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from spec import ClipConfig, TextConfig, VisionConfig
from spec.infer import NON_INFERABLE

MLP_RATIOS = (1.0, 2.0, 2.5, 4.0, 4.3637)


@st.composite
def custom_block_flags(draw) -> dict:
    """OpenCLIP's optional custom-block features (qk_norm and scaled cosine attention exclude each other)."""
    if not draw(st.booleans()):
        return {}
    flags = {name: draw(st.booleans()) for name in ("scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")}
    flags[draw(st.sampled_from(("qk_norm", "scaled_cosine_attn", None))) or "scale_fc"] = True
    return flags


@st.composite
def vit_configs(draw, embed_dim: int) -> VisionConfig:
    head_width = draw(st.sampled_from((8, 12, 16, 20)))
    heads = draw(st.integers(1, 3))
    patch = draw(st.sampled_from((4, 8, 16)))
    grid_h = draw(st.integers(1, 4))
    grid_w = draw(st.integers(1, 4)) if draw(st.booleans()) else grid_h
    image_size = grid_h * patch if grid_h == grid_w else (grid_h * patch, grid_w * patch)
    attentional_pool = draw(st.booleans())
    return VisionConfig(
        image_size=image_size,
        layers=draw(st.integers(1, 3)),
        width=heads * head_width,
        head_width=head_width,
        patch_size=patch,
        mlp_ratio=draw(st.sampled_from(MLP_RATIOS)),
        ls_init_value=draw(st.sampled_from((None, 1e-4, 0.1))),
        attentional_pool=attentional_pool,
        attn_pooler_queries=draw(st.integers(1, 6)) if attentional_pool else 256,
        attn_pooler_heads=draw(st.sampled_from([h for h in (1, 2, 4, 8) if embed_dim % h == 0])),
        no_ln_pre=draw(st.booleans()),
        final_ln_after_pool=draw(st.booleans()),
        pool_type=draw(st.sampled_from(("tok", "avg"))),
        norm_kwargs=draw(st.sampled_from((None, {"eps": 1e-6}))),
        act_kwargs=draw(st.sampled_from((None, {"approximate": "tanh"}))),
        **draw(custom_block_flags()),
    )


@st.composite
def resnet_configs(draw) -> VisionConfig:
    width = draw(st.sampled_from((8, 16, 24)))
    return VisionConfig(
        image_size=32 * draw(st.integers(1, 3)),
        layers=tuple(draw(st.integers(1, 2)) for _ in range(4)),
        width=width,
        head_width=draw(st.sampled_from((32, 64, 128))),
        patch_size=None,
    )


@st.composite
def text_configs(draw, custom: bool) -> TextConfig:
    head_width = draw(st.sampled_from((8, 12, 16)))
    heads = draw(st.integers(1, 3))
    pool_type = draw(st.sampled_from(("argmax", "first", "last", "eos")))
    proj_type = draw(st.sampled_from(("linear", "linear", "none")))
    return TextConfig(
        context_length=draw(st.integers(2, 12)),
        vocab_size=draw(st.integers(8, 64)),
        width=heads * head_width,
        heads=heads,
        layers=draw(st.integers(1, 2)),
        mlp_ratio=draw(st.sampled_from(MLP_RATIOS)),
        ls_init_value=draw(st.sampled_from((None, 1e-4))),
        embed_cls=custom and draw(st.booleans()),
        pool_type=pool_type,
        eos_id=draw(st.integers(1, 7)),
        no_causal_mask=draw(st.booleans()),
        proj_bias=proj_type == "linear" and draw(st.booleans()),  # a bias without a projection means nothing
        proj_type=proj_type,
        norm_kwargs=draw(st.sampled_from((None, {"eps": 1e-6}))),
        act_kwargs=draw(st.sampled_from((None, {"approximate": "tanh"}))),
        **draw(custom_block_flags()),
    )


@st.composite
def clip_configs(draw, kind: str | None = None) -> ClipConfig:
    """A valid small ClipConfig; `kind` ('vit' or 'resnet') fixes the image tower."""
    custom = draw(st.booleans())
    text = draw(text_configs(custom))
    # Without a text projection the text features are the joint embedding.
    embed_dim = text.width if text.proj_type == "none" else draw(st.sampled_from((8, 16, 24, 32)))
    kind = kind or draw(st.sampled_from(("vit", "resnet")))
    vision = draw(vit_configs(embed_dim) if kind == "vit" else resnet_configs())
    # QuickGELU takes no arguments: draw it only where no tower asked for GELU's tanh approximation.
    quick_gelu = not (vision.act_kwargs or text.act_kwargs) and draw(st.booleans())
    return ClipConfig(
        embed_dim=embed_dim,
        vision=vision,
        text=text,
        quick_gelu=quick_gelu,
        init_logit_bias=draw(st.sampled_from((None, -10.0, 0.5))),
        nonscalar_logit_scale=draw(st.booleans()),
        custom_text=custom,
    )


def inferable_part(config: ClipConfig) -> ClipConfig:
    """`config` with every field the shapes cannot tell reset to one fixed value, to compare inferred configs.

    Head counts become one head, the MLP ratio is compared through the MLP width it yields, and layer scale
    and the logit bias by their presence. A non-square ViT grid is what the caller must state, so it is kept.
    """
    towers = {}
    for group, cls in (("vision", VisionConfig), ("text", TextConfig)):
        tower = getattr(config, group)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        changes = {name: defaults[name] for name in NON_INFERABLE[group]}
        changes["ls_init_value"] = None if tower.ls_init_value is None else 1.0
        changes["mlp_ratio"] = float(tower.mlp_width) / tower.width
        towers[group] = changes
    v = config.vision
    towers["vision"]["head_width"] = v.width * 32 if v.kind == "resnet" else v.width
    towers["vision"]["attn_pooler_heads"] = 1
    if v.kind == "resnet":
        towers["vision"]["mlp_ratio"] = 4.0
    towers["text"]["heads"] = 1
    if config.text.proj_type == "none":  # without a projection, its bias flag means nothing
        towers["text"]["proj_bias"] = False
    model_defaults = {f.name: f.default for f in dataclasses.fields(ClipConfig)}
    changes = {name: model_defaults[name] for name in NON_INFERABLE["model"]}
    changes["init_logit_bias"] = None if config.init_logit_bias is None else 0.0
    return config.replace(**changes, **towers)
