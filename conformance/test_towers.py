"""clipcore's towers against the reference (open-clip-torch 3.3.0, and OpenAI's `clip` for the nine models).

The reference builds each model with random weights; every tensor is then perturbed (LayerNorm weights and
biases, BatchNorm running statistics too, so a swapped or ignored tensor shows in the outputs); our model,
built on the meta device, takes the reference's state dict with strict=True, assign=True; and both encode the
same images and token ids in fp32 with relative error (max|a - b| / max|b|) at most 1e-5.
"""

from __future__ import annotations

import contextlib
import math
import time

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from clipcore.errors import ConfigError, ShapeError, UnsupportedModelError
from clipcore.towers import CLIP, build_model
from clipcore.towers.layers import LayerNorm
from clipcore.towers.vit import sincos_2d_table
from conformance.inputs import random_images, random_tokens, rel_err
from conformance.reference import import_openai_clip
from conformance.strategies import clip_configs
from spec import ClipConfig, TextConfig, VisionConfig, shapes_of
from spec.registry import openai_config

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP as RefCLIP  # noqa: E402
from open_clip.model import CustomTextCLIP as RefCustomTextCLIP  # noqa: E402

TOLERANCE = 1e-5
OPENAI_NAMES = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px")
CAST_DTYPES = {None: None, "fp16": torch.float16, "bf16": torch.bfloat16}


# --- the reference side -------------------------------------------------------------------------------------------


def reference_model(config: ClipConfig, device: str = "cpu") -> torch.nn.Module:
    """OpenCLIP's model for `config`: CustomTextCLIP for the `text.` layout, CLIP otherwise."""
    kwargs = config.to_openclip()
    custom = kwargs.pop("custom_text", False)
    kwargs["cast_dtype"] = CAST_DTYPES[kwargs.pop("cast_dtype", None)]
    cls = RefCustomTextCLIP if custom else RefCLIP
    with torch.device(device):
        return cls(**kwargs)


@contextlib.contextmanager
def reference_cosine_attention_fixed(config: ClipConfig):
    """OpenCLIP 3.3.0's scaled cosine attention calls torch.bmm on 4-d tensors and fails. torch.matmul is
    bmm extended to any batch shape (identical on 3-d inputs), so with it the reference computes what it means.
    """
    if not (config.vision.scaled_cosine_attn or config.text.scaled_cosine_attn):
        yield
        return
    original = torch.bmm
    torch.bmm = torch.matmul
    try:
        yield
    finally:
        torch.bmm = original


def perturb_(model: torch.nn.Module, seed: int, vectors_only: bool = False) -> None:
    """Move every floating tensor away from its initial value (ones/zeros included), BN variances > 0.

    `vectors_only` leaves matrices and kernels (already random from the initialisation) alone: for the
    full-size models, where the constants to break (norms, biases, scales) are all vectors or scalars.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if not t.is_floating_point() or (vectors_only and t.ndim > 1):
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(torch.randn(t.shape, generator=g).to(t.dtype) * 0.1)


def assert_same_layout(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Same state-dict keys, in the same order, with the same shapes; same parameter names, in order."""
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd), set(ours_sd) ^ set(ref_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in ref.named_parameters()
    }


def ours_from(ref: torch.nn.Module, config: ClipConfig) -> CLIP:
    model = build_model(config)
    model.load_state_dict(ref.state_dict(), strict=True, assign=True)
    return model


def compare_outputs(config: ClipConfig, batch: int = 3, seed: int = 0) -> dict:
    """Build, perturb, load, run both; return the relative errors (asserted by the callers)."""
    torch.manual_seed(seed)
    ref = reference_model(config).eval()
    perturb_(ref, seed)
    ours = ours_from(ref, config)
    assert_same_layout(ours, ref)
    images = random_images(config, batch, seed)
    tokens = random_tokens(config.text, batch, seed)
    with torch.no_grad(), reference_cosine_attention_fixed(config):
        ref_image, ref_text = ref.encode_image(images), ref.encode_text(tokens)
    errors = {}
    with torch.no_grad():
        if isinstance(ref_image, tuple):  # output_tokens: the reference returns (features, tokens)
            ref_image, ref_tokens = ref_image
            errors["image_tokens"] = rel_err(ours.visual.forward_with_tokens(images)[1], ref_tokens)
        if isinstance(ref_text, tuple):
            ref_text, ref_tokens = ref_text
            errors["text_tokens"] = rel_err(ours.text.encode_tokens(tokens)[1], ref_tokens)
        errors["image"] = rel_err(ours.encode_image(images), ref_image)
        errors["text"] = rel_err(ours.encode_text(tokens), ref_text)
        if ref_image.ndim == 2 and ref_text.ndim == 2 and ref_image.shape[-1] == ref_text.shape[-1]:
            # The reference's get_logits, on its own features (it cannot normalise a (features, tokens) pair).
            ref_logits = ref.logit_scale.exp() * F.normalize(ref_image, dim=-1) @ F.normalize(ref_text, dim=-1).T
            if ref.logit_bias is not None:
                ref_logits += ref.logit_bias
            per_image, per_text = ours(images, tokens)
            errors["logits_per_image"] = rel_err(per_image, ref_logits)
            errors["logits_per_text"] = rel_err(per_text, ref_logits.T)
    return errors


def assert_close(errors: dict) -> None:
    assert all(e <= TOLERANCE for e in errors.values()), errors


# --- configs ------------------------------------------------------------------------------------------------------


@st.composite
def tower_configs(draw, kind: str | None = None) -> ClipConfig:
    """The lead's small configs plus the options they leave at their defaults."""
    config = draw(clip_configs(kind))
    vision, text = {}, {}
    v = config.vision
    if v.kind == "vit":
        if draw(st.booleans()):
            vision["pool_type"] = draw(st.sampled_from(("tok", "avg", "none")))
        if v.width % 4 == 0 and v.grid_size[0] == v.grid_size[1] and draw(st.booleans()):
            vision["pos_embed_type"] = "sin_cos_2d"
        vision["output_tokens"] = draw(st.booleans())
        vision["patch_dropout"] = draw(st.sampled_from((0.0, 0.5)))  # eval mode: no effect, but built
        vision["block_type"] = draw(st.sampled_from((None, None, "default", "custom")))
    if draw(st.booleans()):
        text["pool_type"] = draw(st.sampled_from(("first", "last", "argmax", "eos", "none")))
    text["output_tokens"] = draw(st.booleans())
    text["block_type"] = draw(st.sampled_from((None, None, "default", "custom")))
    return config.replace(vision=vision, text=text)


# --- differential: generated configs ------------------------------------------------------------------------------


@given(tower_configs("vit"))
def test_vit_configs_match_reference(config):
    assert_close(compare_outputs(config))


@given(tower_configs("resnet"))
def test_resnet_configs_match_reference(config):
    assert_close(compare_outputs(config))


OPENAI_LIKE = [
    # OpenAI's layout and options (QuickGELU, argmax pooling, causal text) at toy sizes, odd widths included.
    ClipConfig(
        embed_dim=24,
        vision=VisionConfig(image_size=32, layers=2, width=40, head_width=20, patch_size=8),
        text=TextConfig(context_length=10, vocab_size=50, width=56, heads=4, layers=2),
        quick_gelu=True,
    ),
    ClipConfig(
        embed_dim=16,
        vision=VisionConfig(image_size=(32, 48), layers=1, width=56, head_width=8, patch_size=16),
        text=TextConfig(context_length=7, vocab_size=30, width=40, heads=5, layers=3),
        quick_gelu=True,
    ),
    ClipConfig(
        embed_dim=24,
        vision=VisionConfig(image_size=96, layers=(1, 2, 1, 1), width=24, head_width=64, patch_size=None),
        text=TextConfig(context_length=9, vocab_size=40, width=40, heads=2, layers=1),
        quick_gelu=True,
    ),
    ClipConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=64, layers=(2, 1, 1, 2), width=8, head_width=32, patch_size=None),
        text=TextConfig(context_length=12, vocab_size=60, width=32, heads=4, layers=2),
        quick_gelu=True,
        nonscalar_logit_scale=True,
    ),
]


@pytest.mark.parametrize("config", OPENAI_LIKE, ids=lambda c: c.vision.kind)
def test_openai_layout_small_configs_match_reference(config):
    assert_close(compare_outputs(config, batch=2))


_TEXT = dict(context_length=9, vocab_size=40, width=48, heads=3, layers=2)
FEATURE_CONFIGS = {
    # Options the generated configs reach rarely, each at least once, deliberately.
    "cosine-attention-and-all-scales": ClipConfig(
        embed_dim=24,
        vision=VisionConfig(
            image_size=32, layers=2, width=40, head_width=10, patch_size=8, ls_init_value=0.1,
            scaled_cosine_attn=True, scale_heads=True, scale_attn_inner=True, scale_attn=True, scale_fc=True,
            norm_kwargs={"eps": 1e-6}, act_kwargs={"approximate": "tanh"},
        ),
        text=TextConfig(**_TEXT, qk_norm=True, scale_heads=True, scale_attn_inner=True, scale_attn=True,
                        scale_fc=True, embed_cls=True, ls_init_value=0.1, norm_kwargs={"eps": 1e-6}),
        custom_text=True,
        init_logit_bias=-2.0,
    ),
    "qk-norm-pooler-tokens": ClipConfig(
        embed_dim=16,
        vision=VisionConfig(
            image_size=(16, 32), layers=1, width=56, head_width=14, patch_size=8, qk_norm=True,
            attentional_pool=True, attn_pooler_queries=5, attn_pooler_heads=4, pool_type="avg",
            final_ln_after_pool=True, output_tokens=True,
        ),
        text=TextConfig(**_TEXT, scaled_cosine_attn=True, embed_cls=True, no_causal_mask=True, output_tokens=True),
        custom_text=True,
    ),
    "no-pooling": ClipConfig(
        embed_dim=16,
        vision=VisionConfig(image_size=32, layers=1, width=32, head_width=16, patch_size=16, pool_type="none",
                            no_ln_pre=True, pos_embed_type="sin_cos_2d"),
        text=TextConfig(**_TEXT, pool_type="none", proj_bias=True),
    ),
    "eos-pool-no-projection": ClipConfig(
        embed_dim=48,
        vision=VisionConfig(image_size=32, layers=1, width=32, head_width=16, patch_size=8, final_ln_after_pool=True,
                            block_type="custom"),
        text=TextConfig(**_TEXT, pool_type="eos", eos_id=3, proj_type="none", no_causal_mask=True,
                        block_type="default", qk_norm=True),
        nonscalar_logit_scale=True,
        init_logit_bias=1.5,
    ),
}


@pytest.mark.parametrize("config", FEATURE_CONFIGS.values(), ids=FEATURE_CONFIGS.keys())
def test_feature_configs_match_reference(config):
    assert_close(compare_outputs(config))


@pytest.mark.parametrize("mode", ["parallel", "cascade"])
def test_coca_attentional_pool_forms_match_reference(mode):
    # OpenCLIP's two-pooler forms only run when the tower width equals embed_dim.
    config = ClipConfig(
        embed_dim=32,
        vision=VisionConfig(
            image_size=32, layers=1, width=32, head_width=16, patch_size=16, attentional_pool=mode,
            attn_pooler_queries=3, attn_pooler_heads=4,
        ),
        text=TextConfig(context_length=6, vocab_size=20, width=16, heads=2, layers=1),
    )
    errors = compare_outputs(config, batch=2)
    assert errors["image"] <= TOLERANCE and errors["text"] <= TOLERANCE, errors


def test_coca_attentional_pool_forms_need_width_equal_to_embed_dim():
    # The spec refuses this combination before any module is built.
    with pytest.raises(ConfigError, match="attentional_pool"):
        ClipConfig(
            embed_dim=16,
            vision=VisionConfig(image_size=32, layers=1, width=32, patch_size=16, head_width=16,
                                attentional_pool="cascade", attn_pooler_heads=4),
            text=TextConfig(context_length=6, vocab_size=20, width=16, heads=2, layers=1),
        )


def test_attentional_pooler_key_names_follow_multihead_attention():
    """torch keeps a fused in_proj_weight only when the key/value width equals the model width."""
    base = dict(image_size=32, layers=1, patch_size=16, head_width=16, attentional_pool=True, attn_pooler_heads=2)
    text = TextConfig(context_length=5, vocab_size=20, width=16, heads=2, layers=1)
    fused = build_model(ClipConfig(embed_dim=32, vision=VisionConfig(width=32, **base), text=text)).state_dict()
    split = build_model(ClipConfig(embed_dim=16, vision=VisionConfig(width=32, **base), text=text)).state_dict()
    assert "visual.attn_pool.attn.in_proj_weight" in fused
    assert not any(k.startswith("visual.attn_pool.attn.") and "_proj_weight" in k and "in_proj" not in k for k in fused)
    assert {"visual.attn_pool.attn.q_proj_weight", "visual.attn_pool.attn.k_proj_weight"} <= set(split)
    assert split["visual.attn_pool.attn.k_proj_weight"].shape == (16, 32)
    assert "visual.attn_pool.attn.in_proj_weight" not in split


# --- the nine OpenAI architectures --------------------------------------------------------------------------------


def _openai_reference(config: ClipConfig, device: str = "meta") -> torch.nn.Module:
    """OpenAI's own `clip.model.CLIP` for one of its nine architectures."""
    clip = import_openai_clip()
    v, t = config.vision, config.text
    with torch.device(device):
        return clip.model.CLIP(
            config.embed_dim, v.image_size, v.layers, v.width, v.patch_size,
            t.context_length, t.vocab_size, t.width, t.heads, t.layers,
        )


@pytest.mark.parametrize("name", OPENAI_NAMES)
def test_openai_architectures_have_reference_layout(name):
    config = openai_config(name)
    started = time.perf_counter()
    ours = build_model(config)
    assert time.perf_counter() - started < 1.0
    assert_same_layout(ours, reference_model(config, device="meta"))
    openai_keys = {k: v.shape for k, v in _openai_reference(config).state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == openai_keys
    assert dict(shapes_of(config)) == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RN50", "ViT-B/32"])
def test_openai_architectures_forward_matches_references(name):
    """Full size, batch 2: OpenCLIP (QuickGELU) and OpenAI's own model, both from the same perturbed weights.

    Features match OpenCLIP's, and logits OpenAI's, within 1e-5. The two references differ from each other
    by about 1e-6 per block (OpenCLIP feeds a transposed, non-contiguous view to the attention's
    in-projection, so BLAS rounds differently); cosine logits amplify that (their relative error is about
    that of the features divided by the cosines), so against OpenCLIP the logits must be within 1e-5 or as
    close as OpenAI's own model is.
    """
    config = openai_config(name)
    torch.manual_seed(0)
    ref = reference_model(config).eval()
    perturb_(ref, 0, vectors_only=True)
    ours = ours_from(ref, config)
    openai = _openai_reference(config, device="cpu").eval()
    openai.load_state_dict(ref.state_dict(), strict=True)
    images, tokens = random_images(config, 2, 1), random_tokens(config.text, 2, 1)
    with torch.no_grad():
        ours_logits = ours(images, tokens)
        ref_image, ref_text = ref.encode_image(images), ref.encode_text(tokens)
        openclip_logits = ref.logit_scale.exp() * F.normalize(ref_image, dim=-1) @ F.normalize(ref_text, dim=-1).T
        openai_logits = openai(images, tokens)
        errors = {
            "image": rel_err(ours.encode_image(images), ref_image),
            "text": rel_err(ours.encode_text(tokens), ref_text),
            "openai_logits_per_image": rel_err(ours_logits[0], openai_logits[0]),
            "openai_logits_per_text": rel_err(ours_logits[1], openai_logits[1]),
        }
        logits_error = rel_err(ours_logits[0], openclip_logits)
        references_apart = rel_err(openai_logits[0], openclip_logits)
    assert_close(errors)
    assert logits_error <= max(TOLERANCE, references_apart * 1.01), (logits_error, references_apart)


# --- construction and loading --------------------------------------------------------------------------------------


def test_build_on_meta_allocates_and_initialises_nothing():
    config = openai_config("ViT-L/14")
    started = time.perf_counter()
    model = build_model(config)
    assert time.perf_counter() - started < 1.0
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.is_meta for t in tensors)
    assert not model.training
    assert (model.context_length, model.vocab_size, model.dtype) == (77, 49408, torch.float32)
    assert model.config is config


def test_assigned_state_dict_leaves_nothing_on_meta():
    """No non-persistent buffers: every tensor the model uses is in its state dict, so assign finishes it."""
    config = OPENAI_LIKE[2]  # ResNet: BatchNorm buffers too
    ref = reference_model(config).eval()
    model = ours_from(ref, config)
    keys = set(model.state_dict())
    assert {n for n, _ in model.named_buffers()} <= keys
    assert all(not t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    for (key, ours), theirs in zip(model.state_dict().items(), ref.state_dict().values(), strict=True):
        assert ours.data_ptr() == theirs.data_ptr(), f"{key} was copied, not assigned"


def test_assign_is_load_state_dict_with_assign():
    from clipcore.assemble import assign

    config = OPENAI_LIKE[2]  # ResNet: buffers as well as parameters
    state = reference_model(config).state_dict()
    ours, theirs = build_model(config), build_model(config)
    theirs.visual.conv1.weight.requires_grad_(False)
    ours.visual.conv1.weight.requires_grad_(False)
    assign(ours, dict(state))
    theirs.load_state_dict(dict(state), strict=True, assign=True)
    for (a_name, a), (b_name, b) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert a_name == b_name and a is not b and a.data_ptr() == b.data_ptr()
        assert type(a) is type(b) is nn.Parameter and a.requires_grad == b.requires_grad
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert not ours.visual.conv1.weight.requires_grad and not ours.training
    incomplete = dict(state)
    del incomplete["visual.bn1.running_mean"]
    with pytest.raises(ShapeError, match=r"'visual\.bn1\.running_mean' was given no tensor"):
        assign(build_model(config), incomplete)


def test_build_on_a_real_device_and_dtype():
    config = OPENAI_LIKE[0]
    model = build_model(config, device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.mark.parametrize(
    "change, kind",
    [
        # timm and Hugging Face towers are built now (conformance/test_foreign_towers.py)
        ({"multimodal": {"width": 512}, "custom_text": True}, "CoCa"),
    ],
)
def test_unsupported_model_kinds_are_refused(change, kind):
    config = OPENAI_LIKE[0].replace(**change)
    with pytest.raises(UnsupportedModelError, match=kind) as info:
        build_model(config)
    assert "later" in info.value.fix


def test_sincos_positions_need_width_divisible_by_4():
    # The spec refuses this config before any module is built.
    with pytest.raises(ConfigError, match="sin_cos_2d"):
        OPENAI_LIKE[0].replace(vision={"width": 42, "head_width": 21, "pos_embed_type": "sin_cos_2d"})


# --- behaviour beyond the outputs -----------------------------------------------------------------------------------


def test_sincos_table_matches_reference():
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    for width, grid in ((16, 1), (40, 3), (768, 14)):
        expected = torch.from_numpy(get_2d_sincos_pos_embed(width, grid, cls_token=True)).float()
        assert torch.equal(sincos_2d_table(width, grid), expected)


def test_layer_norm_computes_in_float32_and_returns_input_dtype():
    torch.manual_seed(0)
    ln = LayerNorm(64)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(4, 64) * 100 + 1000  # large mean: low-precision statistics would be far off
    for dtype in (torch.float16, torch.bfloat16):
        low = ln.to(dtype)
        out = low(x.to(dtype))
        assert out.dtype == dtype
        expected = torch.nn.functional.layer_norm(
            x.to(dtype).float(), (64,), low.weight.float(), low.bias.float()
        ).to(dtype)
        assert torch.equal(out, expected)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LOW_PRECISION_CASES = [
    pytest.param("cpu", OPENAI_LIKE[0], id="cpu-vit"),
    pytest.param("cpu", OPENAI_LIKE[2], id="cpu-resnet"),
    pytest.param("cuda", OPENAI_LIKE[2], id="cuda-resnet", marks=[pytest.mark.cuda, CUDA]),
    pytest.param("cuda", "ViT-B/32", id="cuda-ViT-B/32", marks=[pytest.mark.cuda, CUDA]),
    pytest.param("cuda", "ViT-L/14", id="cuda-ViT-L/14", marks=[pytest.mark.cuda, CUDA]),
]


@pytest.mark.parametrize("dtype, min_cosine", [(torch.float16, 0.9999), (torch.bfloat16, 0.999)], ids=str)
@pytest.mark.parametrize("device, config", LOW_PRECISION_CASES)
def test_low_precision_model_agrees_with_fp32_reference(device, config, dtype, min_cosine):
    """fp16/bf16 weights (as a GPU backend runs them; LayerNorm statistics stay fp32) against the fp32
    reference. Inputs arrive as float64 images and are cast to the weight dtype by the model."""
    config = openai_config(config) if isinstance(config, str) else config
    ref = reference_model(config).eval()
    perturb_(ref, 3, vectors_only=True)
    model = build_model(config)
    model.load_state_dict({k: v.to(device, dtype) for k, v in ref.state_dict().items()}, assign=True)
    assert model.dtype == dtype
    images, tokens = random_images(config, 2, 3), random_tokens(config.text, 2, 3)
    with torch.no_grad():
        for encode, arg in (("encode_image", images), ("encode_text", tokens)):
            low = getattr(model, encode)(arg.to(device, torch.float64) if encode == "encode_image" else arg.to(device))
            high = getattr(ref, encode)(arg)
            assert low.dtype == dtype
            assert F.cosine_similarity(low.float().cpu(), high, dim=-1).min() >= min_cosine, encode


def test_causal_text_ignores_what_follows_the_pooled_token():
    """With the causal mask, dropping trailing padding changes nothing (and shorter inputs are accepted)."""
    config = OPENAI_LIKE[0]
    ref = reference_model(config).eval()
    perturb_(ref, 4)
    model = ours_from(ref, config)
    tokens = random_tokens(config.text, 4, 4)
    tokens[:, 6:] = 0
    tokens[:, 5] = config.text.vocab_size - 1
    with torch.no_grad():
        assert rel_err(model.encode_text(tokens[:, :6]), model.encode_text(tokens)) <= 1e-6


def test_tracing_gives_the_same_outputs():
    config = OPENAI_LIKE[0]
    ref = reference_model(config).eval()
    perturb_(ref, 5)
    model = ours_from(ref, config)
    images, tokens = random_images(config, 2, 5), random_tokens(config.text, 2, 5)
    with torch.no_grad():
        traced = torch.jit.trace_module(
            model, {"forward": (images, tokens), "encode_image": images, "encode_text": tokens}
        )
        other_images, other_tokens = random_images(config, 2, 6), random_tokens(config.text, 2, 6)
        assert torch.equal(traced.encode_image(other_images), model.encode_image(other_images))
        assert torch.equal(traced.encode_text(other_tokens), model.encode_text(other_tokens))
        assert torch.equal(traced(other_images, other_tokens)[0], model(other_images, other_tokens)[0])


@pytest.mark.parametrize("config", [*FEATURE_CONFIGS.values(), OPENAI_LIKE[2]], ids=[*FEATURE_CONFIGS, "resnet"])
def test_scripting_gives_the_same_outputs(config):
    model = build_model(config, device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    scripted = torch.jit.script(model)
    images, tokens = random_images(config, 2, 9), random_tokens(config.text, 2, 9)
    with torch.no_grad():
        assert torch.equal(scripted.encode_image(images), model.encode_image(images))
        assert torch.equal(scripted.encode_text(tokens), model.encode_text(tokens))
        if isinstance(model.text, torch.nn.Module):  # the tower on its own, with its (features, tokens) form
            text_tower = torch.jit.script(model.text)
            assert all(torch.equal(a, b) for a, b in zip(text_tower(tokens), model.text(tokens), strict=True))


def test_patch_dropout_only_while_training():
    config = OPENAI_LIKE[0].replace(vision={"patch_dropout": 0.5})
    model = build_model(config, device="cpu")
    model.init_weights()
    images = random_images(config, 2, 7)
    with torch.no_grad():
        seen = []
        model.visual.transformer.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
        model.encode_image(images)
        model.train()
        model.encode_image(images)
    grid = config.vision.grid_size
    assert seen == [grid[0] * grid[1] + 1, int(grid[0] * grid[1] * 0.5) + 1]


def test_training_step_reaches_every_parameter():
    config = OPENAI_LIKE[1].replace(vision={"ls_init_value": 0.1}, init_logit_bias=-1.0)
    model = build_model(config, device="cpu")
    model.init_weights()
    model.train()
    model.set_grad_checkpointing(True)
    logits, _ = model(random_images(config, 3, 8), random_tokens(config.text, 3, 8))
    torch.nn.functional.cross_entropy(logits, torch.arange(3)).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []


# --- initialisation --------------------------------------------------------------------------------------------------

INIT_CONFIGS = [
    ClipConfig(
        embed_dim=64,
        vision=VisionConfig(
            image_size=64, layers=2, width=96, head_width=32, patch_size=16, ls_init_value=1e-4,
            attentional_pool=True, attn_pooler_queries=16, attn_pooler_heads=4, qk_norm=True, scale_heads=True,
            scale_fc=True,
        ),
        text=TextConfig(context_length=32, vocab_size=500, width=96, heads=4, layers=3, proj_bias=True),
        init_logit_bias=-10.0,
        custom_text=True,
    ),
    ClipConfig(
        embed_dim=96,
        vision=VisionConfig(image_size=64, layers=(1, 1, 1, 1), width=32, head_width=32, patch_size=None),
        text=TextConfig(context_length=32, vocab_size=500, width=128, heads=4, layers=2, scale_attn=True),
        quick_gelu=True,
        init_logit_scale=math.log(10.0),
    ),
    ClipConfig(
        embed_dim=64,
        vision=VisionConfig(image_size=64, layers=1, width=64, patch_size=16, pos_embed_type="sin_cos_2d"),
        text=TextConfig(context_length=16, vocab_size=300, width=64, heads=2, layers=1, embed_cls=True),
        custom_text=True,
    ),
]


def _kurtosis(t: torch.Tensor) -> float:
    centred = t - t.mean()
    return (centred.pow(4).mean() / centred.pow(2).mean().pow(2)).item()


@pytest.mark.parametrize("config", INIT_CONFIGS, ids=lambda c: c.vision.kind)
def test_init_weights_matches_reference_distributions(config):
    """Per tensor: constants exactly; otherwise mean and std within sampling error of the reference's, and
    for large tensors the shape of the distribution (normal vs uniform) through the kurtosis."""
    torch.manual_seed(0)
    ref = reference_model(config)
    model = build_model(config, device="cpu")
    torch.manual_seed(1)
    model.init_weights()
    ours_sd, ref_sd = model.state_dict(), ref.state_dict()
    assert list(ours_sd) == list(ref_sd)
    for key, theirs in ref_sd.items():
        ours = ours_sd[key]
        assert ours.dtype == theirs.dtype, key
        if not theirs.is_floating_point() or theirs.numel() == 1 or theirs.std() == 0:
            assert torch.equal(ours, theirs), key
            continue
        n = theirs.numel()
        std_ours, std_ref = ours.double().std().item(), theirs.double().std().item()
        assert abs(std_ours - std_ref) <= 6 * std_ref / math.sqrt(n), (key, std_ours, std_ref)
        assert abs(ours.double().mean().item() - theirs.double().mean().item()) <= 6 * std_ref / math.sqrt(n), key
        if n >= 4000:
            assert abs(_kurtosis(ours.double()) - _kurtosis(theirs.double())) < 0.4, key
