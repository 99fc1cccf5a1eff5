"""The backends: the registry and option routing, each backend on each format it accepts against the reference,
TorchScript archive patching on the CPU (archives crafted to carry `cuda` device constants and float16 casts,
as OpenAI's GPU-traced releases do), the export round trip through OpenAI's `clip.load(jit=True)`, and the
half-precision model of the CUDA backends, run on the CPU for its logic and on CUDA where there is one.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import backends
import clipcore
import spec
from backends.cuda import build_half, trim_padding
from backends.jit_patch import patch_module
from backends.precision import half_keys
from backends.torchscript import quiet_jit  # torch.jit warns it is deprecated; called on purpose here
from clipcore.checkpoint import open_checkpoint
from clipcore.errors import BackendError, ConfigError
from clipcore.preprocess import normalize_uint8
from conformance.inputs import assert_outputs_close, clip_outputs, random_images, random_tokens, rel_err
from conformance.reference import (
    _OPENAI_ARCHITECTURES,
    import_openai_clip,
    openai_model_on_meta,
    openclip_model,
    perturb,
    save_formats,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
HALF_FORMATS = {"fp16", "torchscript"}  # save_formats' files whose weights are stored in float16
HALF_COSINE = 0.9999  # the bound for float16 against the float32 reference
BF16_COSINE = 0.9995  # bfloat16 keeps 8 bits of mantissa; measured >= 0.99994 on these models (see report)

VIT = spec.ClipConfig(
    embed_dim=32,
    vision=spec.VisionConfig(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
    text=spec.TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    quick_gelu=True,
)
RESNET = spec.ClipConfig(
    embed_dim=32,
    vision=spec.VisionConfig(image_size=64, layers=(1, 1, 1, 1), width=16, head_width=32, patch_size=None),
    text=spec.TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
    quick_gelu=True,
)
# OpenAI's conventions (64-wide heads, QuickGELU): what an archive's root scalars let a reader assume.
OPENAI_LIKE = spec.ClipConfig(
    embed_dim=32,
    vision=spec.VisionConfig(image_size=32, layers=2, width=128, head_width=64, patch_size=8),
    text=spec.TextConfig(context_length=16, vocab_size=100, width=64, heads=1, layers=2),
    quick_gelu=True,
)
# OpenAI's own `clip.model.CLIP(...)` arguments for a small model (see conformance.reference).
OPENAI_SMALL = (32, 32, 2, 64, 8, 16, 100, 32, 2, 2)


def overrides(config: spec.ClipConfig) -> dict:
    """What the shapes cannot tell, stated by the caller."""
    return {"quick_gelu": config.quick_gelu, "vision": {"head_width": config.vision.head_width},
            "text": {"heads": config.text.heads}}


def fp16_rounded(model: torch.nn.Module) -> torch.nn.Module:
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded


def cosine(ours: torch.Tensor, expected: torch.Tensor) -> float:
    return F.cosine_similarity(ours.float(), expected.float(), dim=-1).min().item()


class Case:
    """A reference model with random perturbed weights, saved in every format, and its expected outputs."""

    def __init__(self, config: spec.ClipConfig, folder, seed: int) -> None:
        torch.manual_seed(seed)
        self.config = config
        self.reference = perturb(openclip_model(config), seed=seed + 1)
        self.paths = save_formats(self.reference, folder, config.vision.image_size, config.text.context_length,
                                  config.text.vocab_size)
        self.images = random_images(config, 2, seed=seed + 2)
        self.tokens = random_tokens(config.text, 3, seed=seed + 3)
        self.expected = {"fp32": clip_outputs(self.reference, self.images, self.tokens),
                         "fp16": clip_outputs(fp16_rounded(self.reference), self.images, self.tokens)}

    def expected_for(self, fmt: str) -> dict:
        return self.expected["fp16" if fmt in HALF_FORMATS else "fp32"]


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return Case(VIT, tmp_path_factory.mktemp("vit"), seed=0)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return Case(RESNET, tmp_path_factory.mktemp("resnet"), seed=10)


# --- the registry and option routing -------------------------------------------------------------------------


def test_registry_lists_every_backend_and_what_runs_here():
    registered = backends.registered()
    assert {"eager", "torchscript", "cuda-fp16", "cuda-bf16"} <= set(registered)
    assert registered["eager"].options == ("precision",)
    assert set(registered["torchscript"].options) == {"trust_archive", "mode"}
    assert set(registered["cuda-fp16"].options) == {"compile", "channels_last", "trim_text"}
    assert {"eager", "torchscript"} <= set(backends.available())
    assert ("cuda-fp16" in backends.available()) == CUDA
    for name in ("eager", "torchscript"):
        assert backends.get(name).name == name


def test_unknown_backend_lists_what_is_available(vit):
    with pytest.raises(BackendError) as error:
        clipcore.load(vit.paths["safetensors"], device="cpu", backend="tensorrt")
    text = str(error.value)
    assert "'tensorrt'" in text and "eager" in text and "torchscript" in text
    if not CUDA:
        assert "cuda-fp16 (CUDA is not available" in text
    with pytest.raises(BackendError, match="unknown backend"):
        backends.get(None)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda-fp16", "cuda-bf16"])
def test_cuda_backend_without_cuda_says_why(vit, name):
    with pytest.raises(BackendError) as error:
        clipcore.load(vit.paths["safetensors"], backend=name)
    text = str(error.value)
    assert f"{name!r} cannot run here" in text and "CUDA is not available" in text and "eager" in text


def test_cuda_factories_refuse_another_device(vit):
    with open_checkpoint(vit.paths["safetensors"]) as checkpoint, pytest.raises(BackendError, match="CUDA device"):
        backends.registered()["cuda-fp16"].factory(VIT, checkpoint, "cpu")


def test_options_are_routed_to_the_chosen_backend(vit):
    path = vit.paths["safetensors"]
    with pytest.raises(ConfigError, match="unknown keyword argument 'fast'"):
        clipcore.load(path, device="cpu", fast=True)
    # An option another backend has: the error says which backends take it.
    with pytest.raises(BackendError, match=r"'eager' has no option 'trust_archive' \(backends \['torchscript'\]"):
        clipcore.load(path, device="cpu", trust_archive=True)
    with pytest.raises(BackendError, match="cuda-fp16"):
        clipcore.load(path, device="cpu", backend="torchscript", compile=True)
    # Config overrides and options mix freely.
    model, _ = clipcore.load(path, device="cpu", backend="torchscript", mode="trace", **overrides(VIT))
    assert model.config == VIT
    with pytest.raises(BackendError, match="unknown mode"):
        clipcore.load(path, device="cpu", backend="torchscript", mode="jit")
    with pytest.raises(BackendError, match="unknown precision"):
        clipcore.load(path, device="cpu", precision="int8")


# --- each backend on each format, against the reference ------------------------------------------------------


@pytest.mark.parametrize("fmt", ["fp32", "fp16", "legacy", "safetensors", "training", "torchscript"])
def test_eager_on_every_format(vit, fmt):
    model, _ = clipcore.load(vit.paths[fmt], device="cpu", **overrides(VIT))
    assert model.config == VIT and model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert_outputs_close(clip_outputs(model, vit.images, vit.tokens), vit.expected_for(fmt))


# Every weights format scripted; one float32 and one float16 file traced.
COMPILED = [("script", fmt) for fmt in ("fp32", "fp16", "legacy", "safetensors", "training")] + [
    ("trace", "fp16"), ("trace", "safetensors")]


@pytest.mark.parametrize(("mode", "fmt"), COMPILED, ids=[f"{m}-{f}" for m, f in COMPILED])
def test_torchscript_compiles_every_weights_format(vit, fmt, mode):
    model, _ = clipcore.load(vit.paths[fmt], device="cpu", backend="torchscript", mode=mode, **overrides(VIT))
    assert isinstance(model.script, torch.jit.ScriptModule)
    assert model.config == VIT and model.dtype == torch.float32 and model.device == torch.device("cpu")
    expected = vit.expected_for(fmt)
    assert_outputs_close(clip_outputs(model, vit.images, vit.tokens), expected)
    with torch.no_grad():
        logits, logits_t = model(vit.images, vit.tokens)
    assert rel_err(logits, expected["logits"]) <= 1e-5 and torch.equal(logits_t, logits.t())


def test_torchscript_resnet(resnet):
    model, _ = clipcore.load(resnet.paths["safetensors"], device="cpu", backend="torchscript", **overrides(RESNET))
    assert_outputs_close(clip_outputs(model, resnet.images, resnet.tokens), resnet.expected["fp32"])


def test_uint8_input_matches_the_float_path(vit):
    model, _ = clipcore.load(vit.paths["safetensors"], device="cpu", **overrides(VIT))
    batch = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(model.encode_image_uint8(batch), model.encode_image(normalize_uint8(batch)))


# --- the TorchScript opt-in ----------------------------------------------------------------------------------


def test_archive_needs_trust_and_eager_reads_it_without_running_it(vit, monkeypatch):
    archive = vit.paths["torchscript"]
    for trust in (False, "yes", 1):
        with pytest.raises(BackendError) as error:
            clipcore.load(archive, device="cpu", backend="torchscript", trust_archive=trust)
        text = str(error.value)
        assert "torch.jit.load" in text and "backend='eager'" in text and "trust_archive=True" in text

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)
    model, _ = clipcore.load(archive, device="cpu", **overrides(VIT))
    assert_outputs_close(clip_outputs(model, vit.images, vit.tokens), vit.expected["fp16"])


# --- archive patching on the CPU -----------------------------------------------------------------------------


def retarget_saved_archive(path, device: str = "cuda:0") -> int:
    """Rewrite every device constant of a saved archive's graphs to `device`, as a GPU trace records it."""
    with quiet_jit():
        script = torch.jit.load(str(path))
        count = 0
        for module in script.modules():
            for method in module._c._method_names():
                for node in module._c._get_method(method).graph.findAllNodes("prim::Constant"):
                    if node.output().type().kind() == "DeviceObjType":
                        node.s_("value", device)
                        count += 1
        torch.jit.save(script, str(path))
    return count


def gpu_like_openai_archive(path):
    """OpenAI's own model class, converted to its float16 layout and traced like its releases (three methods,
    root scalars), on the CPU; then its device constants rewritten to `cuda:0`. Returns the float32 model with
    the same (float16-rounded) weights."""
    clip = import_openai_clip()
    torch.manual_seed(20)
    model = perturb(clip.model.CLIP(*OPENAI_SMALL), seed=21)
    clip.model.convert_weights(model)
    reference = copy.deepcopy(model).float()  # the same weights (those convert_weights rounded) in float32
    for name in ("context_length", "vocab_size"):
        model.__dict__.pop(name, None)
    for name, value in (("input_resolution", 32), ("context_length", 16), ("vocab_size", 100)):
        model.register_buffer(name, torch.tensor(value))
    image = torch.randn(1, 3, 32, 32)
    tokens = torch.tensor([[98] + [7] * 4 + [99] + [0] * 10])
    inputs = {"forward": (image, tokens), "encode_image": (image,), "encode_text": (tokens,)}
    with quiet_jit():
        torch.jit.save(torch.jit.trace_module(model, inputs, check_trace=False), str(path))
    assert retarget_saved_archive(path) > 0
    return reference


def assert_archive_is_gpu_only(path):
    """The crafted archive really carries what OpenAI's do: it cannot run on the CPU unpatched."""
    if CUDA:
        return
    with quiet_jit():
        script = torch.jit.load(str(path), map_location="cpu")
    with pytest.raises(RuntimeError):
        script.encode_text(torch.tensor([[1, 2, 99] + [0] * 13]))


def openai_outputs(path, images, tokens) -> dict:
    clip = import_openai_clip()
    with quiet_jit():
        model, _ = clip.load(str(path), device="cpu", jit=True)
    return clip_outputs(model, images, tokens)


def test_openai_style_gpu_archive_is_patched_for_the_cpu(tmp_path):
    path = tmp_path / "gpu-archive.pt"
    reference = gpu_like_openai_archive(path)
    assert_archive_is_gpu_only(path)
    config = spec.ClipConfig(
        embed_dim=32,
        vision=spec.VisionConfig(image_size=32, layers=2, width=64, head_width=64, patch_size=8),
        text=spec.TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
        quick_gelu=True,
    )
    model, preprocess = clipcore.load(path, device="cpu", backend="torchscript", trust_archive=True,
                                      text={"heads": 2})
    assert model.config == config and preprocess.size == (32, 32)
    assert model.patches.devices > 0 and model.patches.dtypes > 0
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    images = random_images(config, 2, seed=22)
    tokens = random_tokens(config.text, 3, seed=23)
    ours = clip_outputs(model, images, tokens)
    assert ours["image"].dtype == torch.float32
    assert_outputs_close(ours, clip_outputs(reference, images, tokens))
    assert_outputs_close(ours, openai_outputs(path, images, tokens))
    with torch.no_grad():  # the archive's own forward, patched too
        assert rel_err(model(images, tokens)[0], ours["logits"]) <= 1e-5


@pytest.mark.parametrize("config", [VIT, RESNET], ids=["vit", "resnet"])
def test_our_half_precision_export_traced_for_cuda_is_patched_for_the_cpu(config, tmp_path, vit, resnet):
    """clipcore's own model in OpenAI's float16 layout, exported (casts to float16 in the graph), its device
    constants rewritten to cuda:0: the torchscript backend and OpenAI's loader both run it in float32."""
    case = vit if config is VIT else resnet
    half, _ = clipcore.load(case.paths["fp16"], device="cpu", precision="fp16", **overrides(config))
    assert half.dtype == torch.float16
    path = clipcore.export_torchscript(half, tmp_path / "half.pt")
    assert retarget_saved_archive(path) > 0
    assert_archive_is_gpu_only(path)
    model, _ = clipcore.load(path, device="cpu", backend="torchscript", trust_archive=True, **overrides(config))
    assert model.patches.dtypes > 0 and model.dtype == torch.float32
    ours = clip_outputs(model, case.images, case.tokens)
    assert_outputs_close(ours, case.expected["fp16"])
    assert_outputs_close(ours, openai_outputs(path, case.images, case.tokens))


def test_patching_changes_dtype_arguments_only():
    """A float16 cast is rewritten; the integer 5 used as a size is not (OpenAI's patch would make it 6)."""

    class Cast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.to(torch.float16).reshape(5, -1).float() + x.new_zeros(1, device=x.device)

    with quiet_jit():
        traced = torch.jit.trace(Cast(), torch.randn(5, 4), check_trace=False)  # not run: patchable
    report = patch_module(traced, "cpu", float32=True)
    x = torch.randn(5, 4) * 1e-4 + 1  # float16 would round these
    assert report.dtypes == 1
    assert torch.equal(traced(x), x)


# --- export round trip through OpenAI's loader ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_export_round_trip_through_openai_clip_load(kind, tmp_path, resnet):
    if kind == "vit":  # OpenAI's conventions: read back without any override
        torch.manual_seed(30)
        reference = perturb(openclip_model(OPENAI_LIKE), seed=31)
        config, paths = OPENAI_LIKE, save_formats(reference, tmp_path, 32, 16, 100, formats=("safetensors",))
        images, tokens = random_images(config, 2, seed=32), random_tokens(config.text, 3, seed=33)
        expected, extra = clip_outputs(reference, images, tokens), {}
    else:
        config, paths, images, tokens = RESNET, resnet.paths, resnet.images, resnet.tokens
        expected, extra = resnet.expected["fp32"], overrides(RESNET)
    model, _ = clipcore.load(paths["safetensors"], device="cpu", **extra)
    path = clipcore.export_torchscript(model, tmp_path / "exported.pt")

    clip = import_openai_clip()
    with quiet_jit():
        theirs, preprocess = clip.load(str(path), device="cpu", jit=True)
    assert preprocess.transforms[0].size == config.vision.image_size
    assert_outputs_close(clip_outputs(theirs, images, tokens), expected)
    with torch.no_grad():
        logits, _ = theirs(images, tokens)
    assert rel_err(logits, expected["logits"]) <= 1e-5

    # The archive carries its config (extra/open_clip_config.json): read back with no overrides.
    back, _ = clipcore.load(path, device="cpu")
    assert back.config == config
    assert_outputs_close(clip_outputs(back, images, tokens), expected)
    scripted, _ = clipcore.load(path, device="cpu", backend="torchscript", trust_archive=True)
    assert_outputs_close(clip_outputs(scripted, images, tokens), expected)


def test_export_refuses_what_is_not_a_clipcore_model(tmp_path):
    with pytest.raises(ConfigError, match="clipcore CLIP model"):
        clipcore.export_torchscript(torch.nn.Linear(2, 2), tmp_path / "x.pt")


# --- the CUDA backends' half-precision model, on the CPU -------------------------------------------------------


@pytest.mark.parametrize("name", ["RN50", "ViT-B/32"])
def test_half_layout_is_openai_convert_weights(name):
    clip = import_openai_clip()
    theirs = openai_model_on_meta(name)
    clip.model.convert_weights(theirs)
    half = {k for k, v in theirs.state_dict().items() if v.dtype == torch.float16}
    assert half_keys(spec.openai_config(name)) == half


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_half_model_on_the_cpu(kind, dtype, vit, resnet):
    case = vit if kind == "vit" else resnet
    with open_checkpoint(case.paths["safetensors"]) as checkpoint:
        model = build_half(case.config, checkpoint, "cpu", dtype)
    assert type(model).__name__ == "HalfCLIP" and model.dtype == dtype
    # Dtype placement: OpenAI's layout; every norm's tensors in float32.
    half = half_keys(case.config)
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert tensor.dtype == (dtype if key in half else torch.float32), key
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d))]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    if kind == "resnet":
        assert model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # Numbers: features against the float32 reference.
    ours = clip_outputs(model, case.images, case.tokens)
    bound = HALF_COSINE if dtype == torch.float16 else BF16_COSINE
    assert cosine(ours["image"], case.expected["fp32"]["image"]) >= bound
    assert cosine(ours["text"], case.expected["fp32"]["text"]) >= bound
    features = model.encode_image(case.images)
    assert features.dtype == dtype and features.is_inference()
    # The uint8 input path normalises then casts once, as the float path does.
    batch = torch.randint(0, 256, (2, *case.config.vision.image_size_hw, 3), dtype=torch.uint8)
    assert torch.equal(model.encode_image_uint8(batch), model.encode_image(normalize_uint8(batch)))


def test_half_layer_norm_statistics_are_float32(vit):
    with open_checkpoint(vit.paths["safetensors"]) as checkpoint:
        model = build_half(VIT, checkpoint, "cpu", torch.float16)
    ln = model.visual.ln_pre
    x = torch.randn(2, 5, 64) * 300 + 1000  # variance and mean squares past float16's range (65504)
    out = ln(x.half())
    assert out.dtype == torch.float16 and out.isfinite().all()
    expected = F.layer_norm(x.half().float(), (64,), ln.weight, ln.bias, ln.eps)
    assert (out.float() - expected).abs().max() <= 1e-2


def test_half_text_mask_and_trimming(vit):
    with open_checkpoint(vit.paths["safetensors"]) as checkpoint:
        model = build_half(VIT, checkpoint, "cpu", torch.float16)
    assert model.trim_text
    tokens = torch.zeros(3, 16, dtype=torch.long)
    for row, n in enumerate((3, 6, 2)):
        tokens[row, :n] = torch.arange(1, n + 1)
        tokens[row, n - 1] = 99  # EOT
    assert trim_padding(tokens, 0).shape == (3, 8)
    assert trim_padding(torch.zeros(2, 16, dtype=torch.long), 0).shape == (2, 8)
    trimmed = model.encode_text(tokens)
    model.trim_text = False
    full = model.encode_text(tokens)
    assert cosine(trimmed, full) >= 0.99999
    # The causal mask: what follows the EOT token cannot change the features.
    noisy = tokens.clone()
    noisy[tokens == 0] = torch.randint(1, 90, (int((tokens == 0).sum()),))
    changed = model.encode_text(noisy)
    assert (changed - full).abs().max() <= 1e-3 * full.abs().max()


def test_half_model_compiles_in_place(vit):
    """compile= goes through torch.compile (here its 'eager' backend: the wiring, no code generation)."""
    with open_checkpoint(vit.paths["safetensors"]) as checkpoint:
        plain = build_half(VIT, checkpoint, "cpu", torch.float16)
        compiled = build_half(VIT, checkpoint, "cpu", torch.float16, compile="eager")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    torch._dynamo.reset()
    try:
        for method in ("encode_image", "encode_text"):
            inputs = vit.images if method == "encode_image" else vit.tokens
            assert torch.equal(getattr(compiled, method)(inputs), getattr(plain, method)(inputs))
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("name", ["RN50", "ViT-B/32"])
def test_half_openai_architecture_on_the_cpu(name, tmp_path):
    clip = import_openai_clip()
    args = _OPENAI_ARCHITECTURES[name]
    torch.manual_seed(40)
    reference = perturb(clip.model.CLIP(*args), seed=41)
    paths = save_formats(reference, tmp_path, args[1], 77, args[6], formats=("safetensors",))
    images = torch.randn(2, 3, args[1], args[1], generator=torch.Generator().manual_seed(42))
    tokens = clipcore.tokenize(["a photo of a cat", "a diagram of two dogs and a very long caption"])
    expected = clip_outputs(reference, images, tokens)
    del reference
    with open_checkpoint(paths["safetensors"]) as checkpoint:
        model = build_half(spec.openai_config(name), checkpoint, "cpu", torch.float16)
    ours = clip_outputs(model, images, tokens)
    assert cosine(ours["image"], expected["image"]) >= HALF_COSINE
    assert cosine(ours["text"], expected["text"]) >= HALF_COSINE


# --- on CUDA --------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("backend", ["cuda-fp16", "cuda-bf16"])
@pytest.mark.parametrize("fmt", ["fp32", "fp16", "safetensors", "training", "torchscript"])
def test_cuda_backends_on_every_format(vit, backend, fmt):
    if backend == "cuda-bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    model, _ = clipcore.load(vit.paths[fmt], backend=backend, **overrides(VIT))
    assert model.device.type == "cuda"
    ours = clip_outputs(model, vit.images.cuda(), vit.tokens.cuda())
    expected = vit.expected["fp32"]
    bound = HALF_COSINE if backend == "cuda-fp16" else BF16_COSINE
    for key in ("image", "text"):
        assert cosine(ours[key].cpu(), expected[key]) >= bound, key


@needs_cuda
@pytest.mark.parametrize("name", ["RN50", "ViT-B/32"])
def test_cuda_fp16_openai_architecture(name, tmp_path):
    clip = import_openai_clip()
    args = _OPENAI_ARCHITECTURES[name]
    torch.manual_seed(50)
    reference = perturb(clip.model.CLIP(*args), seed=51)
    paths = save_formats(reference, tmp_path, args[1], 77, args[6], formats=("fp16",))
    images = torch.randn(8, 3, args[1], args[1], generator=torch.Generator().manual_seed(52))
    tokens = clipcore.tokenize([f"a photo of a number {i}" for i in range(8)])
    expected = clip_outputs(reference, images, tokens)
    for options in ({}, {"compile": True}):
        model, _ = clipcore.load(paths["fp16"], backend="cuda-fp16", **options)
        ours = clip_outputs(model, images.cuda(), tokens.cuda())
        assert cosine(ours["image"].cpu(), expected["image"]) >= HALF_COSINE, options
        assert cosine(ours["text"].cpu(), expected["text"]) >= HALF_COSINE, options
        # Zero-shot: the same top-1 wherever the reference's choice is not a near tie.
        top2 = expected["logits"].topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-2 * expected["logits"].abs().max()
        assert torch.equal(ours["logits"].cpu().argmax(-1)[clear], expected["logits"].argmax(-1)[clear])


@needs_cuda
def test_cuda_uint8_input_is_pinned_and_normalised_on_the_gpu(resnet):
    model, _ = clipcore.load(resnet.paths["safetensors"], backend="cuda-fp16", **overrides(RESNET))
    batch = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    ours = model.encode_image_uint8(batch)
    expected = model.encode_image(normalize_uint8(batch).cuda())
    assert ours.device.type == "cuda" and cosine(ours, expected) >= 0.99999
