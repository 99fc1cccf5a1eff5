"""Towers from other libraries (timm image towers, Hugging Face text towers) against OpenCLIP 3.3.0.

- Every OpenCLIP config with a timm or Hugging Face tower builds on the meta device with exactly the
  reference's state-dict keys, shapes and order.
- Small towers (timm's own test models, tiny transformers configs) built by the reference with random weights,
  every tensor perturbed, saved as safetensors and assembled by clipcore give the same outputs (fp32, rel. err
  <= 1e-5), including the buffers the libraries compute at construction.
- Locking freezes the reference's parameters; without the extra, the error names it.

The Hugging Face model configs cannot be downloaded here: the reference's `AutoConfig.from_pretrained` is
pointed at the config.json files clipcore ships (or at a test's own folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import clipcore.towers.hf_text as hf_text
from clipcore.assemble import assemble
from clipcore.checkpoint import open_checkpoint
from clipcore.errors import ConfigError, ShapeError, UnknownModelError, UnsupportedModelError
from clipcore.towers import build_model
from clipcore.towers.foreign import ForeignTower
from clipcore.towers.timm_vision import TimmVision
from conformance.inputs import assert_outputs_close, clip_outputs, random_images
from conformance.reference import openclip_model, perturb
from spec import ClipConfig, VisionConfig
from spec.registry import get_model_config, list_models

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

SHIPPED = Path(hf_text.__file__).parents[1] / "data" / "hf_configs"
FOREIGN = [
    name
    for name in list_models()
    if (c := get_model_config(name)) is not None
    and not c.is_coca
    and (c.vision.kind == "timm" or c.text.kind == "hf")
]


def _reference_hf_config(name, *args, **kwargs):
    """The reference's AutoConfig.from_pretrained, offline: a folder's config.json, or the shipped copy."""
    folder = Path(name)
    path = folder / "config.json" if folder.is_dir() else SHIPPED / f"{name.replace('/', '--')}.json"
    data = json.loads(path.read_text())
    return transformers.AutoConfig.for_model(data.pop("model_type"), **data)


@pytest.fixture(autouse=True)
def reference_offline(monkeypatch):
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", _reference_hf_config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


# --- every OpenCLIP config with a foreign tower ---------------------------------------------------------------------


def test_the_foreign_configs_are_openclips():
    theirs = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        if "multimodal_cfg" in cfg:
            continue
        if "timm_model_name" in cfg["vision_cfg"] or "hf_model_name" in cfg["text_cfg"]:
            theirs.append(name)
    assert sorted(FOREIGN) == sorted(theirs)
    timm_count = sum(get_model_config(n).vision.kind == "timm" for n in FOREIGN)
    hf_count = sum(get_model_config(n).text.kind == "hf" for n in FOREIGN)
    assert (len(FOREIGN), timm_count, hf_count) == (85, 78, 9)


@pytest.mark.parametrize("name", FOREIGN)
def test_builds_with_the_reference_layout(name):
    ours = build_model(get_model_config(name))
    with torch.device("meta"):
        ref = open_clip.create_model(name, pretrained_hf=False, device="meta")
    assert _layout(ours) == _layout(ref)
    assert ours.context_length == ref.context_length and ours.vocab_size == ref.vocab_size


# --- outputs --------------------------------------------------------------------------------------------------------

TINY_TEXT = {"width": 32, "heads": 2, "layers": 1, "context_length": 12, "vocab_size": 64}
TIMM_CASES = {
    # the trunk's classifier is the projection (no pool given: the model's default)
    "vit-classifier-proj": {"timm_model_name": "test_vit", "timm_pool": "", "timm_proj": None},
    # relative-position buffers (computed at build time, in no checkpoint), linear head with bias
    "vit-relpos-linear": {
        "timm_model_name": "test_vit_relpos", "timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": True,
    },
    "convnext-mlp": {"timm_model_name": "test_convnext", "timm_pool": "avg", "timm_proj": "mlp"},
    # BatchNorm (running statistics perturbed) and OpenAI-style attention pooling in the head
    "efficientnet-abs-attn": {"timm_model_name": "test_efficientnet", "timm_pool": "abs_attn", "timm_proj": None},
    "byobnet-rot-attn": {"timm_model_name": "test_byobnet", "timm_pool": "rot_attn", "timm_proj": ""},
    # SigLIP style: no projection, features are the trunk's pooled width
    "vit-map-none": {"timm_model_name": "test_vit2", "timm_pool": "map", "timm_proj": "none"},
}


def _timm_config(case: str) -> ClipConfig:
    vision = {"image_size": 160, **TIMM_CASES[case]}
    embed = 64 if case == "vit-map-none" else 32  # test_vit2's width
    return ClipConfig(embed_dim=embed, vision=vision, text={**TINY_TEXT, "width": embed}, custom_text=True)


def _compare(config: ClipConfig, tmp_path: Path, images: torch.Tensor, tokens: torch.Tensor) -> ClipConfig:
    import safetensors.torch

    ref = perturb(openclip_model(config))
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = assemble(config, open_checkpoint(path))
    assert _layout(ours) == _layout(ref)
    ref_buffers = dict(ref.named_buffers())
    for prefix, tower in ours.named_children():  # the buffers no checkpoint holds came out right too
        if isinstance(tower, ForeignTower):
            for name, buf in tower.named_buffers():
                assert torch.equal(buf, ref_buffers[f"{prefix}.{name}"]), name
    assert_outputs_close(clip_outputs(ours, images, tokens), clip_outputs(ref, images, tokens))
    return ours


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_tower_outputs_match(case, tmp_path):
    config = _timm_config(case)
    images = random_images(config, 2, seed=1)
    tokens = torch.randint(1, 63, (2, 12), generator=torch.Generator().manual_seed(2))
    _compare(config, tmp_path, images, tokens)


def _hf_folder(tmp_path: Path, config: dict) -> str:
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


HF_CASES = {
    "roberta-mean-mlp": (
        {"model_type": "roberta", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 40, "pad_token_id": 1,
         "type_vocab_size": 1, "layer_norm_eps": 1e-5},
        {"hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp"},
    ),
    # BERT's own pooling layer gives the CLS feature (pooler_output)
    "bert-cls-linear": (
        {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 40, "pad_token_id": 0},
        {"hf_pooler_type": "cls_pooler", "hf_proj_type": "linear"},
    ),
    # an encoder-decoder (NLLB's architecture): the encoder only, sinusoidal positions computed at build time
    "m2m100-cls-linear": (
        {"model_type": "m2m_100", "d_model": 32, "encoder_layers": 2, "decoder_layers": 1,
         "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
         "vocab_size": 100, "max_position_embeddings": 40, "pad_token_id": 1, "scale_embedding": True},
        {"hf_pooler_type": "cls_pooler", "hf_proj_type": "linear"},
    ),
    "mt5-first-token": (
        {"model_type": "mt5", "d_model": 32, "num_layers": 2, "num_decoder_layers": 1, "num_heads": 2,
         "d_kv": 16, "d_ff": 64, "vocab_size": 100, "feed_forward_proj": "gated-gelu", "pad_token_id": 0,
         "tie_word_embeddings": False, "is_encoder_decoder": True},
        {"hf_pooler_type": "cls_last_hidden_state_pooler", "hf_proj_type": "mlp"},
    ),
}


def _hf_config(case: str, tmp_path: Path) -> tuple[ClipConfig, torch.Tensor]:
    hf, options = HF_CASES[case]
    text = {"hf_model_name": _hf_folder(tmp_path, hf), "hf_model_pretrained": False, **options}
    vision = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
    config = ClipConfig(embed_dim=24, vision=vision, text=text)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(2, 100, (3, 10), generator=g)
    tokens[0, 6:] = hf["pad_token_id"]  # padding that the attention mask and the poolers must skip
    tokens[1, 3:] = hf["pad_token_id"]
    return config, tokens


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_tower_outputs_match(case, tmp_path):
    config, tokens = _hf_config(case, tmp_path)
    _compare(config, tmp_path, random_images(config, 3, seed=4), tokens)


def test_max_pooler_skips_padding(tmp_path):
    # OpenCLIP 3.3.0's max pooler fails on its own integer mask; ours takes the maximum over the real tokens.
    config, tokens = _hf_config("roberta-mean-mlp", tmp_path)
    config = config.replace(text={"hf_pooler_type": "max_pooler", "hf_proj_type": "linear"})
    model = build_model(config, device="cpu")
    model.init_weights()
    tower = model.text
    with torch.no_grad():
        hidden = tower.transformer(input_ids=tokens, attention_mask=(tokens != 1).long()).last_hidden_state
        expected = torch.stack([h[t != 1].max(dim=0).values for h, t in zip(hidden, tokens, strict=True)])
        assert torch.equal(tower(tokens), tower.proj(expected))


def test_constants_of_a_meta_built_tower():
    # Swin computes its attention masks on its parameters' device: on meta they are recovered by a real build.
    from open_clip.timm_model import TimmModel

    vision = VisionConfig(image_size=224, timm_model_name="swin_tiny_patch4_window7_224", timm_pool="")
    with torch.device("meta"):
        ours = TimmVision(vision, 32)
    assert any(buf.is_meta for buf in ours.buffers())
    ours.to_empty(device="cpu")
    ref = TimmModel("swin_tiny_patch4_window7_224", 32, pool="")
    persistent = ref.state_dict()
    constants = {k: v for k, v in ref.named_buffers() if k not in persistent}
    assert set(constants) == set(ours.constant_names()) and constants
    for key, buf in ours.named_buffers():
        if key in constants:
            assert torch.equal(buf, constants[key]), key


def test_init_weights_is_the_libraries(tmp_path):
    config, _ = _hf_config("roberta-mean-mlp", tmp_path)
    config = config.replace(vision={"image_size": 160, **TIMM_CASES["convnext-mlp"]})
    model = build_model(config, device="cpu")
    torch.nn.init.constant_(model.visual.trunk.stem[0].weight, float("nan"))
    model.init_weights()
    for name, tensor in model.state_dict().items():
        assert torch.isfinite(tensor.float()).all(), name
    # timm's ConvNeXt draws conv weights from trunc_normal(std=0.02); transformers' RoBERTa, normal(std=0.02)
    assert 0.01 < model.visual.trunk.stem[0].weight.std() < 0.03
    assert 0.01 < model.text.transformer.embeddings.word_embeddings.weight.std() < 0.03
    assert isinstance(model.visual, ForeignTower) and isinstance(model.text, ForeignTower)


# --- locking --------------------------------------------------------------------------------------------------------


def _frozen(model: torch.nn.Module) -> tuple[set[str], set[str]]:
    params = dict(model.named_parameters())
    return set(params), {n for n, p in params.items() if not p.requires_grad}


@pytest.mark.parametrize("case", ["efficientnet-abs-attn", "vit-relpos-linear", "convnext-mlp"])
@pytest.mark.parametrize("unlocked_groups", [0, 1, 2])
@pytest.mark.parametrize("freeze_bn_stats", [False, True])
def test_lock_image_tower_like_the_reference(case, unlocked_groups, freeze_bn_stats):
    config = _timm_config(case)
    ours, ref = build_model(config, device="cpu"), openclip_model(config)
    ours.lock_image_tower(unlocked_groups, freeze_bn_stats)
    ref.lock_image_tower(unlocked_groups, freeze_bn_stats)
    assert _frozen(ours) == _frozen(ref)
    assert _frozen(ours)[1], "something was frozen"
    assert list(ours.state_dict()) == list(ref.state_dict())  # frozen BatchNorms drop num_batches_tracked alike


@pytest.mark.parametrize("case", ["roberta-mean-mlp", "mt5-first-token"])
@pytest.mark.parametrize("unlocked_layers", [0, 1, 2])
@pytest.mark.parametrize("freeze_layer_norm", [True, False])
def test_lock_text_tower_like_the_reference(case, unlocked_layers, freeze_layer_norm, tmp_path, capsys):
    config, _ = _hf_config(case, tmp_path)
    ours, ref = build_model(config), openclip_model(config, device="meta")
    ours.lock_text_tower(unlocked_layers, freeze_layer_norm)
    ref.lock_text_tower(unlocked_layers, freeze_layer_norm)
    assert _frozen(ours) == _frozen(ref)


def test_partial_lock_of_an_architecture_without_groups(tmp_path):
    config, _ = _hf_config("m2m100-cls-linear", tmp_path)
    model = build_model(config)
    with pytest.raises(UnsupportedModelError, match="partial locking"):
        model.lock_text_tower(1)
    model.lock_text_tower(0)
    assert not any(p.requires_grad for p in model.text.transformer.parameters())


def test_grad_checkpointing_reaches_the_libraries(tmp_path):
    config, _ = _hf_config("roberta-mean-mlp", tmp_path)
    config = config.replace(vision={"image_size": 160, **TIMM_CASES["vit-classifier-proj"]})
    model = build_model(config)
    hf = model.text.transformer
    renamed = hasattr(type(hf), "is_activation_checkpointing")  # transformers 5's name
    hf_state = lambda: hf.is_activation_checkpointing if renamed else hf.is_gradient_checkpointing
    model.set_grad_checkpointing(True)
    assert model.visual.trunk.grad_checkpointing and hf_state()
    model.set_grad_checkpointing(False)
    assert not model.visual.trunk.grad_checkpointing and not hf_state()


# --- without the extras ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "extra", "name"), [("timm", "timm", "convnext_base"),
                                                       ("transformers", "hf", "roberta-ViT-B-32")])
def test_a_missing_extra_is_named(monkeypatch, module, extra, name):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(UnsupportedModelError, match=rf"pip install 'clipcore\[{extra}\]'"):
        build_model(get_model_config(name))


def test_hf_config_is_offline_or_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(hf_text.OfflineError, match="no config"):
        hf_text.hf_model_config("someone/unknown-model")
    # a snapshot in the local hub cache wins over the shipped copy
    snapshot = tmp_path / "cache" / "models--roberta-base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    data = json.loads((SHIPPED / "roberta-base.json").read_text())
    (snapshot / "config.json").write_text(json.dumps({**data, "num_hidden_layers": 3}))
    (tmp_path / "cache" / "models--roberta-base" / "refs").mkdir()
    (tmp_path / "cache" / "models--roberta-base" / "refs" / "main").write_text("abc123")
    assert hf_text.hf_model_config("roberta-base").num_hidden_layers == 3
    assert hf_text.hf_model_config("xlm-roberta-base").num_hidden_layers == 12


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vision", "error", "words"),
    [
        ({"timm_model_name": "test_vit_relpos", "timm_pool": "token"}, ConfigError, "class token"),
        ({"timm_model_name": "test_convnext", "patch_dropout": 0.5}, ConfigError, "patch_drop_rate"),
        ({"timm_model_name": "test_vit", "timm_pool": "abs_attn"}, ConfigError, "2-D feature maps"),
        ({"timm_model_name": "no_such_timm_model"}, UnknownModelError, "not a timm model"),
    ],
)
def test_impossible_timm_options_are_named(vision, error, words):
    config = ClipConfig(embed_dim=32, vision={"image_size": 160, **vision}, text=TINY_TEXT)
    with pytest.raises(error, match=words):
        build_model(config)


def test_assemble_checks_a_foreign_checkpoint(tmp_path):
    import safetensors.torch

    config, tokens = _hf_config("roberta-mean-mlp", tmp_path)
    ref = perturb(openclip_model(config))
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    # transformers < 4.31 saved RoBERTa's position ids; they are computed, not loaded (as OpenCLIP drops them)
    old = {**state, "text.transformer.embeddings.position_ids": torch.arange(40)[None] + 5}
    for name, tensors in [("old", old), ("missing", dict(list(state.items())[1:])),
                          ("shape", {**state, "text.proj.0.weight": torch.zeros(3, 3)})]:
        safetensors.torch.save_file(tensors, str(tmp_path / f"{name}.safetensors"))
    ours = assemble(config, open_checkpoint(tmp_path / "old.safetensors"))
    assert torch.equal(ours.text.transformer.embeddings.position_ids, torch.arange(40)[None])
    with torch.no_grad():
        assert torch.equal(ours.encode_text(tokens), ref.encode_text(tokens))
    with pytest.raises(ShapeError, match="missing"):
        assemble(config, open_checkpoint(tmp_path / "missing.safetensors"))
    with pytest.raises(ShapeError, match=r"text\.proj\.0\.weight"):
        assemble(config, open_checkpoint(tmp_path / "shape.safetensors"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_assembled_on_cuda_with_the_constants_there(tmp_path, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full fp32 convolutions and matmuls
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    config, tokens = _hf_config("m2m100-cls-linear", tmp_path)
    config = config.replace(vision={"image_size": 160, **TIMM_CASES["vit-relpos-linear"]})
    ref = perturb(openclip_model(config))
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = assemble(config, open_checkpoint(path), device="cuda")
    assert all(t.device.type == "cuda" for t in [*ours.parameters(), *ours.buffers()])
    images = random_images(config, 2, seed=5)
    expected = clip_outputs(ref, images, tokens)
    got = clip_outputs(ours, images.cuda(), tokens.cuda())
    assert_outputs_close({k: v.cpu() for k, v in got.items()}, expected, tolerance=1e-4)  # CUDA kernels differ
