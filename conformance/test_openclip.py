"""OpenCLIP coverage: every open-clip-torch 3.3.0 config, its entry points, pretrained registry, locking and
the training transform, against the reference.

- Every one of the 144 configs is built by clipcore on the meta device with exactly the reference's
  state-dict keys (in order) and shapes, or refused with UnsupportedModelError (CoCa). timm and Hugging Face
  configs must build when timm / transformers are importable (the `test` extra installs both).
- Forward equality (fp32, relative error <= 1e-5) through `create_model` on perturbed reference weights for a
  sample of families; `infer_config` recognises the native configs from their state-dict shapes.
- `lock_image_tower` / `lock_text_tower` freeze exactly the reference's parameters for each option.
- The training transform draws the same crop boxes and gives the same pixels as the reference.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import random
import warnings

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import clipcore
import spec
from clipcore.errors import ChecksumError, ConfigError, OfflineError, ShapeError, UnsupportedModelError
from clipcore.factory import apply_overrides
from clipcore.hub import find_in_hub_cache, find_pretrained
from clipcore.towers import build_model
from clipcore.transform_train import TrainTransform, random_resized_crop_box
from conformance.inputs import random_images, random_tokens, rel_err
from spec import ClipConfig, TextConfig, VisionConfig
from spec.pretrained import PretrainedCfg, get_pretrained_cfg

open_clip = pytest.importorskip("open_clip")
from open_clip.model import CLIP as RefCLIP  # noqa: E402
from open_clip.model import CustomTextCLIP as RefCustomTextCLIP  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-5
NAMES = open_clip.list_models()
HAVE = {"timm": importlib.util.find_spec("timm") is not None,
        "transformers": importlib.util.find_spec("transformers") is not None}


# --- every config ------------------------------------------------------------------------------------------------


def family(cfg: dict) -> str:
    """'coca', or the towers: 'native', 'timm', 'native+hf', 'timm+hf'."""
    if "multimodal_cfg" in cfg:
        return "coca"
    vision = "timm" if cfg["vision_cfg"].get("timm_model_name") else "native"
    return vision + ("+hf" if cfg["text_cfg"].get("hf_model_name") else "")


@contextlib.contextmanager
def hf_config_from(ours: torch.nn.Module):
    """Offline, the reference's HFTextEncoder cannot fetch its transformers config: give it the one clipcore used."""
    import transformers

    original = transformers.AutoConfig.from_pretrained
    transformers.AutoConfig.from_pretrained = lambda *args, **kwargs: ours.text.config
    try:
        yield
    finally:
        transformers.AutoConfig.from_pretrained = original


def reference_on_meta(cfg: dict, ours: torch.nn.Module | None = None) -> torch.nn.Module:
    """The reference's model for an OpenCLIP JSON config, built as its factory would, without base weights."""
    cfg = copy.deepcopy(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]
    if "timm_model_name" in cfg["vision_cfg"]:
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    hf = "hf_model_name" in cfg["text_cfg"]
    if hf:
        cfg["text_cfg"]["hf_model_pretrained"] = False
    with torch.device("meta"), (hf_config_from(ours) if hf else contextlib.nullcontext()):
        return (RefCustomTextCLIP if custom else RefCLIP)(**cfg)


def ours_on_meta(name: str) -> torch.nn.Module:
    config = apply_overrides(spec.get_model_config(name).to_openclip(), pretrained_image=False, pretrained_text=False)
    return build_model(config)


def test_the_config_set_is_the_reference_one():
    assert len(NAMES) == 144
    assert set(NAMES) <= set(spec.list_models())
    assert [n for n in clipcore.list_models() if n in set(NAMES)] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_like_the_reference_or_is_refused(name):
    cfg = open_clip.get_model_config(name)
    kind = family(cfg)
    if kind == "coca":
        with pytest.raises(UnsupportedModelError, match="CoCa"):
            ours_on_meta(name)
        return
    needs = [lib for lib, part in (("timm", "timm"), ("transformers", "+hf")) if part in kind]
    missing = [lib for lib in needs if not HAVE[lib]]
    if missing:
        with pytest.raises(UnsupportedModelError):
            ours_on_meta(name)
        return
    ours = ours_on_meta(name)
    ref = reference_on_meta(cfg, ours)
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert {k: tuple(v.shape) for k, v in ours_sd.items()} == {k: tuple(v.shape) for k, v in ref_sd.items()}
    assert list(ours_sd) == list(ref_sd)


def native_names() -> list[str]:
    return [n for n in NAMES if family(open_clip.get_model_config(n)) == "native"]


def test_infer_config_recognises_every_native_config():
    """From the reference's state-dict shapes alone: the config, with the fields shapes cannot tell taken
    from the built-in configs of those shapes when they all agree (so only genuine ties are assumed)."""
    for name in native_names():
        cfg = open_clip.get_model_config(name)
        shapes = {k: tuple(v.shape) for k, v in reference_on_meta(cfg).state_dict().items()}
        inferred = spec.infer_config(shapes)
        expected = spec.get_model_config(name)
        assert spec.shapes_of(inferred) == spec.shapes_of(expected), name
        twins = spec.registry.configs_with_shapes_of(expected)
        if all(t == expected for t in twins):
            assert inferred == expected, name
        else:  # e.g. ViT-B-32 and ViT-B-32-quickgelu: the activation is assumed, and said to be
            assert "quick_gelu" in inferred.assumed or inferred == expected, name


# --- forward equality through create_model -----------------------------------------------------------------------


def small(**changes) -> ClipConfig:
    base = ClipConfig(
        embed_dim=32,
        vision=VisionConfig(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
        text=TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    )
    return base.replace(**changes)


FORWARD_CASES = {
    "vit-layerscale-attnpool": small(vision={"ls_init_value": 0.1, "attentional_pool": True, "attn_pooler_queries": 4,
                                             "attn_pooler_heads": 4}, text={"ls_init_value": 0.1}),
    "siglip-style": small(init_logit_bias=-10.0, custom_text=True,
                          vision={"norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"},
                                  "pool_type": "avg", "final_ln_after_pool": True, "no_ln_pre": True},
                          text={"pool_type": "last", "no_causal_mask": True, "proj_bias": True,
                                "norm_kwargs": {"eps": 1e-6}, "act_kwargs": {"approximate": "tanh"}}),
    "custom-text-embed-cls": small(custom_text=True, quick_gelu=True, text={"embed_cls": True, "pad_id": 1}),
    "resnet": small(vision={"layers": (1, 1, 1, 1), "width": 8, "image_size": 64, "head_width": 8}),
}


def perturbed_reference(config: ClipConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = config.to_openclip()
    custom = cfg.pop("custom_text", False)
    ref = (RefCustomTextCLIP if custom else RefCLIP)(**cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in ref.state_dict().items():
            if t.is_floating_point():
                if key.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.add_(torch.randn(t.shape, generator=g) * 0.1)
    return ref.eval()


@pytest.mark.parametrize("case", FORWARD_CASES, ids=FORWARD_CASES.keys())
def test_create_model_forward_matches_reference(case, tmp_path):
    config = FORWARD_CASES[case]
    ref = perturbed_reference(config)
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = clipcore.create_model(config, pretrained=str(path)).eval()
    images, tokens = random_images(config, 3, 0), random_tokens(config.text, 3, 0)
    with torch.no_grad():
        ours_out, ref_out = model(images, tokens), ref(images, tokens)
    assert len(ours_out) == len(ref_out)
    errors = [rel_err(a, b) for a, b in zip(ours_out, ref_out, strict=True)]
    assert max(errors) <= TOLERANCE, errors


def test_flat_checkpoint_loads_into_custom_text_layout(tmp_path):
    config = small()
    ref = perturbed_reference(config)
    path = tmp_path / "flat.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = clipcore.create_model(config, pretrained=str(path), force_custom_text=True).eval()
    assert "text.token_embedding.weight" in model.state_dict()
    tokens = random_tokens(config.text, 2, 1)
    with torch.no_grad():
        assert rel_err(model.encode_text(tokens), ref.encode_text(tokens)) <= TOLERANCE
    with pytest.raises(ShapeError, match="does not fit"):
        clipcore.create_model(config.replace(embed_dim=64), pretrained=str(path))


# --- create_model's semantics --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    """A small config registered under a name, as users add theirs."""
    folder = tmp_path_factory.mktemp("configs")
    path = folder / "clipcore-test-tiny.json"
    path.write_text(json.dumps(small().to_openclip()))
    clipcore.add_model_config(path)
    open_clip.add_model_config(path)
    yield "clipcore-test-tiny"
    # Both registries are process-wide: leave them as the other modules expect them.
    spec.registry._user_configs.pop("clipcore-test-tiny", None)
    open_clip.factory._MODEL_CONFIGS.pop("clipcore-test-tiny", None)


def test_overrides_and_preprocess_follow_the_reference(tiny_name):
    kwargs = dict(force_image_size=48, force_context_length=8, force_quick_gelu=True, init_logit_bias=-5.0,
                  force_preprocess_cfg={"resize_mode": "squash", "mean": None})
    ours = clipcore.create_model(tiny_name, **kwargs)
    ref = open_clip.create_model(tiny_name, **kwargs)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.config.quick_gelu and ours.training and ref.training
    assert ours.visual.preprocess_cfg == ref.visual.preprocess_cfg
    assert ours.logit_bias.item() == ref.logit_bias.item() == -5.0
    with pytest.raises(ConfigError, match="unknown keys"):
        clipcore.create_model(tiny_name, no_such_option=1)


@pytest.mark.parametrize("forced", [{"force_image_size": 48}, {"force_image_size": (48, 64), "precision": "bf16"},
                                    {"force_context_length": 9}, {"force_image_size": 24, "force_context_length": 30}])
@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
def test_pretrained_position_tables_are_fitted_to_forced_sizes(tiny_name, tmp_path, forced, stored):
    state = {k: v.to(stored) if v.is_floating_point() else v
             for k, v in perturbed_reference(small()).state_dict().items()}
    path, upcast = tmp_path / "weights.safetensors", tmp_path / "fp32.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    safetensors.torch.save_file({k: v.float().contiguous() for k, v in state.items()}, str(upcast))
    ours = clipcore.create_model(tiny_name, pretrained=str(path), **forced).state_dict()
    # The reference fits in the file's dtype, which torch's CPU bicubic lacks for bfloat16: it gets the same
    # values in float32, and its fitted tables are rounded to the file's dtype here.
    theirs = open_clip.create_model(tiny_name, pretrained=str(upcast), **forced).state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        expected = theirs[key]
        if key.endswith("positional_embedding"):
            expected = expected.to(stored).to(expected.dtype)
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    size = forced.get("force_image_size", 32)
    height, width = (size, size) if isinstance(size, int) else size
    assert ours["visual.positional_embedding"].shape[0] == 1 + (height // 8) * (width // 8)  # patch size 8


@pytest.mark.parametrize("precision", ["fp16", "bf16", "pure_fp16", "pure_bf16", "amp", "fp32"])
def test_precision_dtypes_follow_the_reference(tiny_name, precision):
    ours = clipcore.create_model(tiny_name, precision=precision)
    ref = open_clip.create_model(tiny_name, precision=precision)
    assert {k: v.dtype for k, v in ours.state_dict().items()} == {k: v.dtype for k, v in ref.state_dict().items()}


def test_unknown_precision_and_names_are_clear_errors(tiny_name):
    with pytest.raises(ConfigError, match="precision"):
        clipcore.create_model(tiny_name, precision="fp8")
    with pytest.raises(clipcore.errors.UnknownModelError):
        clipcore.create_model("ViT-Q-99")
    with pytest.raises(clipcore.errors.UnknownModelError, match="neither a tag"):
        clipcore.create_model(tiny_name, pretrained="no-such-tag")
    with pytest.raises(clipcore.errors.CheckpointError, match="require_pretrained"):
        clipcore.create_model(tiny_name, require_pretrained=True)


def test_output_dict_and_tuple_outputs_match_the_reference(tiny_name):
    torch.manual_seed(0)
    ours = clipcore.create_model(tiny_name, output_dict=True).eval()
    config = small()
    images, tokens = random_images(config, 2, 0), random_tokens(config.text, 2, 0)
    out = ours(images, tokens)
    assert set(out) == {"image_features", "text_features", "logit_scale"}
    assert torch.allclose(out["image_features"].norm(dim=-1), torch.ones(2))
    ours.output_dict = False
    assert ours(images)[1] is None
    per_image, per_text = ours.get_logits(images, tokens)
    assert torch.allclose(per_image, out["logit_scale"] * out["image_features"] @ out["text_features"].T, atol=1e-6)
    assert torch.equal(per_text, per_image.T)


def test_create_model_and_transforms(tiny_name):
    _, train, val = clipcore.create_model_and_transforms(
        tiny_name, image_interpolation="bilinear", aug_cfg={"scale": (0.5, 1.0)})
    _, ref_train, ref_val = open_clip.create_model_and_transforms(
        tiny_name, image_interpolation="bilinear", aug_cfg={"scale": (0.5, 1.0)})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert torch.equal(val(image), ref_val(image))
    torch.manual_seed(3)
    a = train(image)
    torch.manual_seed(3)
    assert torch.equal(a, ref_train(image))


# --- the pretrained registry and local files -------------------------------------------------------------------


def test_pretrained_registry_is_the_reference_one():
    assert clipcore.list_pretrained() == open_clip.list_pretrained()
    assert clipcore.list_pretrained(as_str=True) == open_clip.list_pretrained(as_str=True)
    for model, tag in open_clip.list_pretrained():
        ref = open_clip.get_pretrained_cfg(model, tag)
        ours = get_pretrained_cfg(model, tag.upper().replace("_", "-"))
        assert (ours.url or "") == ref["url"]
        assert (f"{ours.hf_repo}/{ours.hf_file or ''}" if ours.hf_repo else "") == ref["hf_hub"]
        assert ours.preprocess == {k: ref[k] for k in ("mean", "std", "interpolation", "resize_mode")}
        assert ours.quick_gelu == ref.get("quick_gelu", False)
    openai = get_pretrained_cfg("ViT-B-32", "openai")
    assert openai.sha256 == openai.url.split("/")[-2] and len(openai.sha256) == 64


def fake_snapshot(root, repo: str, files: dict[str, bytes], revision: str = "abc123", main: bool = True):
    folder = root / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)
    if main:
        (folder / "refs").mkdir(exist_ok=True)
        (folder / "refs" / "main").write_text(revision)
    return snapshot


def test_pretrained_files_are_found_in_the_hub_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CLIPCORE_CACHE", str(tmp_path / "clipcore"))
    cfg = get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(OfflineError, match="laion/CLIP-ViT-B-32-laion2B-s34B-b79K"):
        find_pretrained(cfg)
    old = fake_snapshot(tmp_path / "hub", cfg.hf_repo, {"open_clip_pytorch_model.bin": b"old"}, "r1", main=False)
    assert find_pretrained(cfg) == old / "open_clip_pytorch_model.bin"
    new = fake_snapshot(tmp_path / "hub", cfg.hf_repo, {"open_clip_model.safetensors": b"x",
                                                        "open_clip_pytorch_model.bin": b"y"}, "r2")
    assert find_pretrained(cfg) == new / "open_clip_model.safetensors"  # refs/main's snapshot, safetensors first
    assert find_in_hub_cache(cfg.hf_repo, ["nothing.bin"]) is None


def test_url_files_are_checked_against_the_hash_in_their_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    data = b"weights"
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    cfg = PretrainedCfg("m", "t", f"https://example.org/x-{digest[:8]}.pt", digest[:8], None, None,
                        (0, 0, 0), (1, 1, 1), "bicubic", "shortest", False)
    (tmp_path / f"x-{digest[:8]}.pt").write_bytes(data)
    assert find_pretrained(cfg, cache_dir=tmp_path).read_bytes() == data
    (tmp_path / f"x-{digest[:8]}.pt").write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        find_pretrained(cfg, cache_dir=tmp_path)


def test_hf_hub_and_local_dir_models_load_offline(tmp_path, monkeypatch):
    config = small(init_logit_bias=-3.0, custom_text=True)
    ref = perturbed_reference(config, seed=2)
    weights = safetensors.torch.save({k: v.contiguous() for k, v in ref.state_dict().items()})
    files = {"open_clip_config.json": json.dumps({"model_cfg": config.to_openclip(),
                                                  "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}).encode(),
             "open_clip_model.safetensors": weights}
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OfflineError, match="hf-hub:org/tiny"):
        clipcore.create_model("hf-hub:org/tiny")
    snapshot = fake_snapshot(tmp_path / "hub", "org/tiny", files)
    tokens = random_tokens(config.text, 2, 0)
    for name in ("hf-hub:org/tiny", f"local-dir:{snapshot}"):
        model, preprocess = clipcore.create_model_from_pretrained(name)
        assert preprocess.mean == (0.5, 0.5, 0.5)
        with torch.no_grad():
            assert rel_err(model.eval().encode_text(tokens), ref.encode_text(tokens)) <= TOLERANCE


# --- tokenizers -----------------------------------------------------------------------------------------------


def test_get_tokenizer_matches_the_reference():
    texts = ["a photo of a cat.", "x " * 100, "Ünïcödé &amp; html"]
    for name in ("ViT-B-32", "ViT-B-32-quickgelu", "RN50", ""):
        assert torch.equal(clipcore.get_tokenizer(name)(texts), open_clip.get_tokenizer(name)(texts))
    assert torch.equal(clipcore.get_tokenizer("ViT-B-32", context_length=10)(texts),
                       open_clip.get_tokenizer("ViT-B-32", context_length=10)(texts))


def test_hf_tokenizers_are_offline_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = OfflineError if HAVE["transformers"] else UnsupportedModelError
    with pytest.raises(expected):
        clipcore.get_tokenizer("ViT-B-16-SigLIP", cache_dir=tmp_path)


# --- locking ----------------------------------------------------------------------------------------------------

LOCK_CONFIGS = {
    "vit": small(vision={"layers": 3}),
    "vit-attnpool-sincos": small(vision={"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 4,
                                         "pos_embed_type": "sin_cos_2d", "no_ln_pre": True}),
    "resnet": FORWARD_CASES["resnet"],
    "custom-text-cls": FORWARD_CASES["custom-text-embed-cls"],
    "custom-text-no-proj": small(custom_text=True, embed_dim=32, text={"proj_type": "none"}),
    "siglip-style": FORWARD_CASES["siglip-style"],
}


def lock_both(config: ClipConfig, image: dict | None, text: dict | None):
    """(ours, reference): fresh models of `config` with the same lock calls."""
    cfg = config.to_openclip()
    custom = cfg.pop("custom_text", False)
    models = (build_model(config, device="cpu"), (RefCustomTextCLIP if custom else RefCLIP)(**cfg))
    for model in models:
        if image is not None:
            model.lock_image_tower(**image)
        if text is not None:
            model.lock_text_tower(**text)
    return models


def frozen(model) -> tuple[set, set]:
    params = dict(model.named_parameters())
    return {n for n, p in params.items() if not p.requires_grad}, set(params)


@pytest.mark.parametrize("name", LOCK_CONFIGS)
def test_locking_freezes_what_the_reference_freezes(name):
    config = LOCK_CONFIGS[name]
    image_options = [{"unlocked_groups": 0}, {"unlocked_groups": 0, "freeze_bn_stats": True}]
    if config.vision.kind == "vit":
        image_options += [{"unlocked_groups": n} for n in (1, 2, 3, 4, 9)]
    text_options = [{"unlocked_layers": n} for n in (0, 1, 2, 3, 4, 9)]
    for image in [*image_options, None]:
        for text in [*text_options, None]:
            ours, ref = lock_both(config, image, text)
            assert frozen(ours) == frozen(ref), (image, text)
            assert set(ours.state_dict()) == set(ref.state_dict()), (image, text)


def test_locking_refusals_match_the_reference():
    resnet, ref = lock_both(LOCK_CONFIGS["resnet"], None, None)
    with pytest.raises(ConfigError, match="partial locking"):
        resnet.lock_image_tower(unlocked_groups=1)
    with pytest.raises(AssertionError):
        ref.lock_image_tower(unlocked_groups=1)
    for config in (LOCK_CONFIGS["vit"], LOCK_CONFIGS["custom-text-cls"]):
        with pytest.raises(ConfigError, match="freeze_layer_norm"):
            build_model(config, device="cpu").lock_text_tower(freeze_layer_norm=False)


def test_frozen_batch_norm_behaves_like_the_reference():
    config = FORWARD_CASES["resnet"]
    ref = perturbed_reference(config)
    ours = build_model(config)
    ours.load_state_dict(ref.state_dict(), assign=True)
    for model in (ours, ref):
        model.lock_image_tower(freeze_bn_stats=True)
        model.train()
    images = random_images(config, 2, 0)
    before = ours.visual.bn1.running_mean.clone()
    with torch.no_grad():
        assert rel_err(ours.encode_image(images), ref.encode_image(images)) <= TOLERANCE
    assert torch.equal(ours.visual.bn1.running_mean, before)
    assert "visual.bn1.num_batches_tracked" not in ours.state_dict()


# --- the training transform -------------------------------------------------------------------------------------


def test_crop_boxes_are_the_reference_draws():
    from torchvision.transforms import RandomResizedCrop

    for width, height, scale in [(400, 300, (0.9, 1.0)), (64, 64, (0.08, 1.0)), (1000, 12, (0.9, 1.0)),
                                 (12, 1000, (0.5, 1.0)), (7, 5, (0.2, 0.3))]:
        image = Image.new("RGB", (width, height))
        for seed in range(20):
            torch.manual_seed(seed)
            ref = RandomResizedCrop.get_params(image, list(scale), [3 / 4, 4 / 3])
            torch.manual_seed(seed)
            assert random_resized_crop_box(width, height, scale) == tuple(ref)


MODES = ["RGB", "RGBA", "L", "P", "CMYK", "I;16"]


@pytest.mark.parametrize("mode", MODES)
def test_given_a_crop_box_the_pixels_are_the_reference_ones(mode):
    import torchvision.transforms.functional as TF
    from torchvision.transforms import Normalize, ToTensor

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).convert(mode)
    transform = TrainTransform((40, 48))
    for box in [(0, 0, 90, 120), (10, 5, 60, 70), (3, 7, 20, 90)]:
        crop = TF.resized_crop(image, *box, [40, 48], interpolation=TF.InterpolationMode.BICUBIC).convert("RGB")
        ref = Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)(ToTensor()(crop))
        assert torch.equal(transform.apply(image, box), ref)


@pytest.mark.parametrize("aug", [
    {},
    {"scale": (0.3, 0.8), "color_jitter": (0.4, 0.4, 0.4, 0.1), "color_jitter_prob": 0.8, "gray_scale_prob": 0.3},
    {"color_jitter": (0.0, 0.5, 0.0, 0.4), "color_jitter_prob": 1.0},
])
def test_seeded_train_transform_equals_the_reference(aug):
    from open_clip.transform import AugmentationCfg, image_transform

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference warns about items it uses (color_jitter_prob, ...)
        ref = image_transform(64, is_train=True, aug_cfg=AugmentationCfg(**aug))
    ours = TrainTransform(64, aug_cfg=aug)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    for seed in range(8):
        torch.manual_seed(seed)
        random.seed(seed)
        expected = ref(image)
        torch.manual_seed(seed)
        random.seed(seed)
        assert torch.equal(ours(image), expected), seed


def test_timm_only_augmentations_are_refused_or_ignored_loudly():
    with pytest.raises(ConfigError, match="use_timm"):
        TrainTransform(64, aug_cfg={"use_timm": True})
    with pytest.warns(UserWarning, match="ratio"):
        TrainTransform(64, aug_cfg={"ratio": (1.0, 1.0)})
    with pytest.raises(ConfigError, match="unknown keys"):
        TrainTransform(64, aug_cfg={"scales": (0.5, 1.0)})
    with pytest.raises(ConfigError, match="color_jitter"):
        TrainTransform(64, aug_cfg={"color_jitter_prob": 0.5})
