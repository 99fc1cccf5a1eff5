"""The `spec` layer: config validation, shapes_of, infer_config, OpenCLIP JSON and the registries."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import spec
from clipcore.errors import ClipcoreError, ConfigError, ShapeError, UnknownModelError, UnsupportedModelError
from conformance.reference import import_openai_clip, openai_model_on_meta, openclip_model
from conformance.strategies import clip_configs, inferable_part
from spec import ClipConfig, TextConfig, VisionConfig

open_clip = pytest.importorskip("open_clip")


def state_dict_shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def native_builtin_names() -> list[str]:
    """Built-in configs whose towers need neither timm nor transformers, and are CLIP (not CoCa)."""
    return [
        name
        for name, c in spec.builtin_configs().items()
        if c.vision.kind != "timm" and c.text.kind != "hf" and not c.is_coca
    ]


# --- layering -----------------------------------------------------------------------------------------------------


def test_import_spec_does_not_import_torch():
    code = "import sys, spec; spec.infer_config(spec.shapes_of(spec.get_model_config('RN50'))); "
    code += "print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- properties ---------------------------------------------------------------------------------------------------


@given(clip_configs())
def test_infer_config_inverts_shapes_of(config):
    shapes = spec.shapes_of(config)
    stated = {}
    if isinstance(config.vision.image_size, tuple):
        stated = {"vision": {"image_size": config.vision.image_size}}
    inferred = spec.infer_config(shapes, **stated)
    assert inferable_part(inferred) == inferable_part(config)
    assert spec.shapes_of(inferred) == shapes
    assert {"quick_gelu", "vision.head_width", "text.heads"} <= set(inferred.assumed)


@given(clip_configs(kind="vit"))
def test_rectangular_grids_need_the_image_size_stated(config):
    gh, gw = config.vision.grid_size
    assume(gh != gw)
    shapes = spec.shapes_of(config)
    if int((gh * gw) ** 0.5) ** 2 != gh * gw:
        with pytest.raises(ShapeError, match="image_size"):
            spec.infer_config(shapes)
    size = (gh * config.vision.patch_size, gw * config.vision.patch_size)
    assert spec.infer_config(shapes, vision={"image_size": size}).vision.grid_size == (gh, gw)


@given(clip_configs())
def test_overrides_replace_what_cannot_be_read(config):
    shapes = spec.shapes_of(config)
    size = {"image_size": config.vision.image_size} if isinstance(config.vision.image_size, tuple) else {}
    inferred = spec.infer_config(
        shapes,
        quick_gelu=config.quick_gelu,
        vision={"head_width": config.vision.head_width, **size},
        text={"heads": config.text.heads},
    )
    assert inferred.quick_gelu == config.quick_gelu
    assert inferred.vision.head_width == config.vision.head_width
    assert inferred.text.heads == config.text.heads
    assert not {"quick_gelu", "vision.head_width", "text.heads"} & set(inferred.assumed)


@given(clip_configs())
def test_openclip_json_round_trip(config):
    as_json = json.loads(json.dumps(config.to_openclip()))
    assert ClipConfig.from_openclip(as_json) == config


@given(clip_configs(), st.data())
def test_corrupted_shapes_give_a_project_error_or_another_valid_model(config, data):
    shapes = spec.shapes_of(config)
    key = data.draw(st.sampled_from(sorted(shapes)))
    corrupted = dict(shapes)
    if data.draw(st.booleans()) or not shapes[key]:
        del corrupted[key]
    else:
        axis = data.draw(st.integers(0, len(shapes[key]) - 1))
        dims = list(shapes[key])
        dims[axis] = data.draw(st.integers(0, 3 * dims[axis] + 2).filter(lambda d: d != dims[axis]))
        corrupted[key] = tuple(dims)
    stated = {"vision": {"image_size": config.vision.image_size}} if isinstance(config.vision.image_size, tuple) else {}
    try:
        inferred = spec.infer_config(corrupted, **stated)
    except ClipcoreError:
        return
    # The corruption happened to describe another valid model: then it must describe it exactly.
    assert spec.shapes_of(inferred) == corrupted


@given(st.dictionaries(st.text(max_size=30), st.one_of(st.tuples(st.integers(-2, 9)), st.text(max_size=3), st.none())))
def test_arbitrary_mappings_never_escape_the_error_hierarchy(shapes):
    with pytest.raises(ClipcoreError):
        spec.infer_config(shapes)


def test_input_types_are_normalised():
    import torch

    shapes = spec.shapes_of(spec.get_model_config("RN50"))
    as_tensors = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    as_lists = {k: list(v) for k, v in shapes.items()}
    assert spec.infer_config(as_tensors) == spec.infer_config(as_lists) == spec.infer_config(shapes)


# --- clear errors ---------------------------------------------------------------------------------------------------


def test_missing_key_is_named():
    shapes = spec.shapes_of(spec.get_model_config("ViT-B/32"))
    del shapes["visual.transformer.resblocks.3.ln_2.bias"]
    with pytest.raises(ShapeError, match=r"visual\.transformer\.resblocks\.3\.ln_2\.bias"):
        spec.infer_config(shapes)


def test_contradictory_widths_are_named_with_both_shapes():
    shapes = spec.shapes_of(spec.get_model_config("ViT-B/32"))
    shapes["text_projection"] = (512, 640)
    with pytest.raises(ShapeError, match=r"text_projection.*640.*512"):
        spec.infer_config(shapes)
    shapes = spec.shapes_of(spec.get_model_config("ViT-B/32"))
    shapes["transformer.resblocks.5.mlp.c_fc.weight"] = (1024, 512)
    with pytest.raises(ShapeError, match=r"resblocks\.5\.mlp\.c_fc\.weight.*\(1024, 512\), expected \(2048, 512\)"):
        spec.infer_config(shapes)


def test_gap_in_layers_is_named():
    shapes = {k: v for k, v in spec.shapes_of(spec.get_model_config("RN50")).items() if ".layer3.2." not in k}
    with pytest.raises(ShapeError, match=r"visual\.layer3\.2"):
        spec.infer_config(shapes)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({}, "no image tower"),
        ({"module." + k: v for k, v in spec.shapes_of(spec.get_model_config("RN50")).items()}, "module."),
        ({"state_dict": (), "epoch": ()}, "state_dict"),
        ({"visual.conv1.weight": (768, 3, 32)}, "4 dimensions"),
        ({"visual.conv1.weight": "768x3"}, "not a tuple of non-negative integers"),
        ({"visual.conv1.weight": (768, 3, -32, 32)}, "non-negative"),
        ({"visual.trunk.stem.weight": (3,)}, "timm"),
        ([("visual.proj", (1, 2))], "mapping"),
    ],
)
def test_bad_inputs_raise_clear_errors(shapes, message):
    with pytest.raises(ClipcoreError, match=message.replace(".", r"\.")):
        spec.infer_config(shapes)


def test_unexpected_extra_key_is_an_error_but_openai_scalars_are_not():
    shapes = spec.shapes_of(spec.get_model_config("ViT-B/16"))
    with_scalars = {**shapes, "input_resolution": (), "context_length": (), "vocab_size": ()}
    assert spec.infer_config(with_scalars) == spec.openai_config("ViT-B/16")
    with pytest.raises(ShapeError, match=r"visual\.extra_head\.weight"):
        spec.infer_config({**shapes, "visual.extra_head.weight": (10, 768)})


def test_override_contradicting_the_shapes_is_an_error():
    shapes = spec.shapes_of(spec.get_model_config("ViT-B/32"))
    with pytest.raises(ShapeError, match="expected"):
        spec.infer_config(shapes, text={"width": 640, "heads": 10})
    with pytest.raises(ConfigError, match="unknown override"):
        spec.infer_config(shapes, heads=12)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: VisionConfig(width=100), "vision.width"),
        (lambda: VisionConfig(image_size=225, patch_size=16), "vision.image_size"),
        (lambda: VisionConfig(layers=0), "vision.layers"),
        (lambda: VisionConfig(layers=(3, 4, 6)), "vision.layers"),
        (lambda: VisionConfig(layers=(3, 4, 6, 3), image_size=230, patch_size=None), "vision.image_size"),
        (lambda: VisionConfig(pool_type="max"), "vision.pool_type"),
        (lambda: VisionConfig(mlp_ratio=float("nan")), "vision.mlp_ratio"),
        (lambda: VisionConfig(patch_dropout=1.0), "vision.patch_dropout"),
        (lambda: VisionConfig(no_ln_pre=1), "vision.no_ln_pre"),
        (lambda: VisionConfig(qk_norm=True, scaled_cosine_attn=True), "qk_norm"),
        (lambda: TextConfig(width=512, heads=7), "text.width"),
        (lambda: TextConfig(context_length=-1), "text.context_length"),
        (lambda: TextConfig(vocab_size=True), "text.vocab_size"),
        (lambda: TextConfig(pool_type="mean"), "text.pool_type"),
        (lambda: ClipConfig(embed_dim=0), "embed_dim"),
        (lambda: ClipConfig(embed_dim=512, text=TextConfig(embed_cls=True)), "embed_cls"),
        (lambda: ClipConfig(embed_dim=100, vision=VisionConfig(attentional_pool=True)), "attn_pooler_heads"),
        (lambda: ClipConfig(embed_dim=512, cast_dtype="fp8"), "cast_dtype"),
        (lambda: VisionConfig(act_kwargs={"approximate": "erf"}), "vision.act_kwargs"),
        (lambda: TextConfig(norm_kwargs={"eps": 0}), "text.norm_kwargs"),
        (
            lambda: ClipConfig(embed_dim=8, quick_gelu=True, text=TextConfig(act_kwargs={"approximate": "tanh"})),
            "quick_gelu",
        ),
    ],
)
def test_impossible_values_name_the_field_and_what_is_allowed(make, field):
    with pytest.raises(ConfigError) as info:
        make()
    assert field in str(info.value)
    assert "fix:" in str(info.value)


def test_a_resnet_has_no_patch_size_however_it_is_built():
    built = ClipConfig(embed_dim=1024, quick_gelu=True,
                       vision=VisionConfig(layers=(3, 4, 6, 3), width=64, head_width=64, patch_size=32),
                       text=TextConfig(width=512, heads=8, layers=12))
    assert built.vision.patch_size is None
    assert built == spec.openai_config("RN50") == spec.infer_config(spec.shapes_of(built)).replace(assumed=())


def test_configs_are_frozen_and_hashable():
    config = spec.get_model_config("ViT-B/32")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.embed_dim = 3
    assert hash(config) == hash(spec.get_model_config("ViT-B/32"))
    with_kwargs = spec.get_model_config("ViT-B-16-SigLIP-256")
    assert with_kwargs.text.tokenizer_kwargs["clean"] == "canonicalize"
    with pytest.raises(TypeError):
        with_kwargs.text.tokenizer_kwargs["clean"] = "lower"


# --- OpenCLIP JSON ---------------------------------------------------------------------------------------------------


def test_every_shipped_json_parses_and_round_trips():
    reference = open_clip.factory._MODEL_CONFIGS
    assert len(reference) == 144
    for name, raw in reference.items():
        config = ClipConfig.from_openclip(raw)
        assert ClipConfig.from_openclip(config.to_openclip()) == config, name
        assert spec.get_model_config(name) == config, name


def test_shipped_shape_index_is_current_and_finds_every_twin():
    from spec import registry

    shipped = json.loads(registry._SHAPE_INDEX.read_text(encoding="utf-8"))
    assert shipped == registry.build_shape_index()
    # the index only narrows the search: the matches are exactly the configs with equal shapes
    by_shapes = {}
    for name, config in spec.builtin_configs().items():
        if not config.is_coca and config.vision.kind != "timm" and config.text.kind != "hf":
            by_shapes.setdefault(frozenset(spec.shapes_of(config).items()), []).append(name)
    for names in by_shapes.values():
        twins = registry.configs_with_shapes_of(spec.get_model_config(names[0]))
        assert twins == [spec.get_model_config(n) for n in names]
    assert sum(map(len, by_shapes.values())) == 55


def test_a_stale_shape_index_can_only_lose_matches(monkeypatch):
    from spec import registry

    digest = registry.shapes_digest(spec.shapes_of(spec.get_model_config("RN50")))
    monkeypatch.setattr(registry, "_shape_index", lambda: {digest: ["RN50", "ViT-B-32"]})
    assert registry.configs_with_shapes_of(spec.get_model_config("RN50")) == [spec.get_model_config("RN50")]


def test_timm_and_hf_fields_are_typed():
    timm = spec.get_model_config("convnext_base")
    assert timm.vision.kind == "timm" and timm.vision.timm_model_name == "convnext_base"
    hf = spec.get_model_config("roberta-ViT-B-32")
    assert hf.text.kind == "hf" and hf.text.hf_model_name == "roberta-base" and hf.text_prefix == "text."


def test_unknown_json_keys_are_listed():
    with pytest.raises(ConfigError, match=r"\['vision_cgf'\]"):
        ClipConfig.from_openclip({"embed_dim": 512, "vision_cgf": {}})
    with pytest.raises(ConfigError, match=r"text_cfg has unknown keys \['hieght'\]"):
        ClipConfig.from_openclip({"embed_dim": 512, "text_cfg": {"hieght": 3}})


def test_hub_style_wrapper_is_unwrapped():
    raw = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {}}
    assert ClipConfig.from_openclip(raw) == spec.get_model_config("ViT-B-32")


# --- against the reference ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", native_builtin_names())
def test_reference_model_has_exactly_the_shapes_of_its_config(name):
    config = spec.get_model_config(name)
    reference = state_dict_shapes(openclip_model(config, device="meta"))
    assert spec.shapes_of(config) == reference
    inferred = spec.infer_config(reference)
    # The activation is the one thing two built-in configs with the same tensors (X and X-quickgelu) differ in.
    assert inferred.replace(quick_gelu=config.quick_gelu) == config
    assert "quick_gelu" in inferred.assumed


def test_coca_is_named_as_unsupported():
    with pytest.raises(UnsupportedModelError, match="CoCa"):
        spec.shapes_of(spec.get_model_config("coca_ViT-B-32"))


@pytest.mark.parametrize("name", spec.available_models())
def test_openai_architectures_from_openai_layout(name):
    reference = state_dict_shapes(openai_model_on_meta(name))
    config = spec.infer_config(reference)
    assert config == spec.openai_config(name)
    assert config.quick_gelu is True and config.vision.head_width == 64
    # OpenCLIP's own builder, fed the same OpenAI-layout state dict, agrees on the architecture.
    import torch
    from open_clip.model import build_model_from_openai_state_dict

    meta_sd = {k: torch.empty(v, device="meta") for k, v in reference.items()}
    with torch.device("meta"):
        built = build_model_from_openai_state_dict(meta_sd)
    assert state_dict_shapes(built) == spec.shapes_of(config)


@settings(max_examples=25)
@given(clip_configs())
def test_random_configs_match_reference_keys_and_shapes(config):
    reference = state_dict_shapes(openclip_model(config, device="meta"))
    assert spec.shapes_of(config) == reference


# --- registries -------------------------------------------------------------------------------------------------------


def test_list_models_is_openclips_list():
    assert spec.list_models() == open_clip.list_models()


def test_openai_names_match_openai_package():
    clip = import_openai_clip()
    assert spec.available_models() == clip.available_models()
    for name in spec.available_models():
        entry = spec.get_checkpoint(name)
        assert entry.url() == clip.clip._MODELS[name]
        assert entry.url("https://mirror.example/clip/") == "https://mirror.example/clip/" + entry.path
        assert len(entry.sha256) == 64 and entry.filename.endswith(".pt")


def test_openai_names_resolve_to_quickgelu_architectures():
    assert spec.openai_config("ViT-L/14@336px") == spec.get_model_config("ViT-L-14-336").replace(quick_gelu=True)
    assert spec.openai_config("ViT-B/32") == spec.get_model_config("ViT-B-32-quickgelu")
    # OpenCLIP's own names keep OpenCLIP's meaning (GELU), '/' read as '-'.
    assert spec.get_model_config("ViT-B/32") == spec.get_model_config("ViT-B-32")
    assert spec.get_model_config("RN50").quick_gelu is False


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownModelError, match="ViT-B-32"):
        spec.get_model_config("ViT-B-23")
    with pytest.raises(UnknownModelError, match="ViT-L/14@336px"):
        spec.get_checkpoint("ViT-X/99")


def test_add_model_config_file_dir_and_errors(tmp_path, monkeypatch):
    from spec import registry

    monkeypatch.setattr(registry, "_user_configs", {})
    config = ClipConfig(embed_dim=64, vision=VisionConfig(width=128, layers=2, patch_size=16, image_size=64))
    (tmp_path / "tiny-vit.json").write_text(json.dumps(config.to_openclip()))
    assert spec.add_model_config(tmp_path / "tiny-vit.json") == ["tiny-vit"]
    assert spec.get_model_config("tiny-vit") == config
    assert "tiny-vit" in spec.list_models()

    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps(config.replace(embed_dim=32).to_openclip()))
    (folder / "b.json").write_text(json.dumps(config.replace(quick_gelu=True).to_openclip()))
    assert sorted(spec.add_model_config(folder)) == ["a", "b"]
    assert spec.get_model_config("a").embed_dim == 32

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        spec.add_model_config(tmp_path / "broken.json")
    (tmp_path / "bad.json").write_text(json.dumps({"embed_dim": 64, "vision_cfg": {"width": 100}}))
    with pytest.raises(ConfigError, match=r"bad\.json.*vision\.width"):
        spec.add_model_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        spec.add_model_config(tmp_path / "missing.json")
    assert "bad" not in spec.list_models()
