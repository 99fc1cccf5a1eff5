"""`clipcore.load` against the reference: every OpenAI architecture and random configs, from every format.

The reference builds each model (OpenAI's own `clip.model.CLIP` for the nine released architectures,
OpenCLIP's CLIP/CustomTextCLIP for generated configs), every tensor is perturbed, the weights are saved the
ways users hold them, and clipcore loads each file through its public entry point. Outputs must match the
reference in fp32 with relative error <= 1e-5, and the inferred config must be the exact architecture.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import logging
import mmap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings

import clipcore
import spec
from clipcore.errors import BackendError, ClipcoreError, ShapeError, UnknownModelError
from conformance.inputs import assert_outputs_close, clip_outputs, random_images, random_tokens
from conformance.reference import (
    _OPENAI_ARCHITECTURES,
    import_openai_clip,
    openclip_model,
    perturb,
    save_formats,
)
from conformance.strategies import clip_configs, inferable_part
from spec.infer import NON_INFERABLE

FORMATS = ("fp32", "fp16", "legacy", "safetensors", "training", "torchscript")
HALF = {"fp16", "torchscript"}  # formats whose weights are stored in float16


def fp16_rounded(model: torch.nn.Module) -> torch.nn.Module:
    """The reference with every float tensor rounded through float16, as a half-precision file stores it."""
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded


def non_inferable_overrides(config: spec.ClipConfig) -> dict:
    """What a caller states for the fields the shapes cannot tell (here: the true values)."""
    out = {name: getattr(config, name) for name in NON_INFERABLE["model"]}
    for group in ("vision", "text"):
        tower = getattr(config, group)
        out[group] = {name: getattr(tower, name) for name in NON_INFERABLE[group]}
        out[group]["mlp_ratio"] = tower.mlp_ratio
    if isinstance(config.vision.image_size, tuple):
        out["vision"]["image_size"] = config.vision.image_size
    return out


# --- the nine OpenAI architectures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", spec.available_models())
def test_openai_architecture_from_every_format(name, tmp_path):
    """Each released architecture, saved in every format, loads to the reference's numbers.

    Outputs are compared once per stored precision (fp32 and fp16); every other file of the same precision
    must then load to bit-identical weights and the same config, which implies identical outputs.
    """
    clip = import_openai_clip()
    args = _OPENAI_ARCHITECTURES[name]
    resolution, vocab = args[1], args[6]
    torch.manual_seed(0)
    reference = perturb(clip.model.CLIP(*args), seed=1)
    paths = save_formats(reference, tmp_path, resolution, 77, vocab)
    images = torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    tokens = clipcore.tokenize(["a photo of a cat", "a diagram of two dogs and a very long caption"])
    expected = {"fp32": clip_outputs(reference, images, tokens)}
    expected["fp16"] = clip_outputs(fp16_rounded(reference), images, tokens)
    del reference

    first: dict[str, dict] = {}
    for fmt in FORMATS:
        model, preprocess = clipcore.load(paths[fmt], device="cpu")
        assert model.config == spec.openai_config(name), fmt
        assert preprocess.size == (resolution, resolution)
        assert model.dtype == torch.float32
        precision = "fp16" if fmt in HALF else "fp32"
        state = model.state_dict()
        if precision not in first:
            assert_outputs_close(clip_outputs(model, images, tokens), expected[precision])
            first[precision] = state
        else:
            assert all(torch.equal(state[k], first[precision][k]) for k in state), fmt
        del model, state
        paths[fmt].unlink()  # big architectures: keep the disk footprint to one file at a time


def test_openai_archive_needs_no_assumptions(tmp_path):
    """An OpenAI-style archive carries the marks of OpenAI's training: nothing is guessed, nothing warned."""
    clip = import_openai_clip()
    torch.manual_seed(0)
    reference = perturb(clip.model.CLIP(*_OPENAI_ARCHITECTURES["ViT-B/32"]))
    paths = save_formats(reference, tmp_path, 224, 77, 49408, formats=("torchscript", "safetensors"))
    archive, _ = clipcore.load(paths["torchscript"], device="cpu")
    assert archive.config.assumed == ()
    plain, _ = clipcore.load(paths["safetensors"], device="cpu")
    assert "quick_gelu" in plain.config.assumed and plain.config.quick_gelu is True


# --- random configs: every OpenCLIP option ------------------------------------------------------------------------


@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(config=clip_configs())
def test_random_configs_from_every_format(config, tmp_path_factory):
    # OpenCLIP 3.3.0 crashes on its own scaled cosine attention (torch.bmm on 4-d tensors), so it can neither
    # run nor trace such a model; conformance/test_towers.py covers that option against a repaired reference.
    assume(not (config.vision.scaled_cosine_attn or config.text.scaled_cosine_attn))
    torch.manual_seed(0)
    reference = perturb(openclip_model(config), seed=3)
    folder = tmp_path_factory.mktemp("load")
    paths = save_formats(reference, folder, config.vision.image_size, config.text.context_length,
                         config.text.vocab_size)
    images = random_images(config, 2, seed=4)
    tokens = random_tokens(config.text, 3, seed=5)
    expected = {"fp32": clip_outputs(reference, images, tokens)}
    expected["fp16"] = clip_outputs(fp16_rounded(reference), images, tokens)
    overrides = non_inferable_overrides(config)
    for fmt in FORMATS:
        model, _ = clipcore.load(paths[fmt], device="cpu", **overrides)
        assert model.config == config, fmt
        assert_outputs_close(clip_outputs(model, images, tokens), expected["fp16" if fmt in HALF else "fp32"])
        # Without the overrides, the architecture read from the shapes alone is still exact.
        inferred = clipcore.api.infer_checkpoint_config(clipcore.checkpoint.open_checkpoint(paths[fmt]),
                                                        vision={"image_size": config.vision.image_size})
        assert inferable_part(inferred) == inferable_part(config)


# --- the facade's behaviour ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    config = spec.ClipConfig(
        embed_dim=32,
        vision=spec.VisionConfig(image_size=32, layers=2, width=64, head_width=32, patch_size=8),
        text=spec.TextConfig(context_length=16, vocab_size=100, width=32, heads=2, layers=2),
        quick_gelu=True,
    )
    torch.manual_seed(0)
    reference = perturb(openclip_model(config))
    folder = tmp_path_factory.mktemp("small")
    return config, reference, save_formats(reference, folder, 32, 16, 100, formats=("safetensors", "fp16"))


def test_assumptions_are_on_the_model_and_logged(small_checkpoint, caplog):
    _, _, paths = small_checkpoint
    with caplog.at_level(logging.INFO, logger="clipcore"):
        model, _ = clipcore.load(paths["safetensors"], device="cpu")
    assert set(model.config.assumed) == {"quick_gelu", "text.heads", "vision.head_width"}
    assert model.config.text.heads == 1 and model.config.vision.head_width == 64  # the documented defaults
    record = next(r for r in caplog.records if r.name == "clipcore")
    assert record.levelno == logging.WARNING
    assert "quick_gelu=True" in record.getMessage() and "text.heads=1" in record.getMessage()


def test_overrides_fix_what_the_shapes_cannot_tell(small_checkpoint):
    config, reference, paths = small_checkpoint
    model, _ = clipcore.load(paths["safetensors"], device="cpu", text={"heads": 2}, vision={"head_width": 32})
    assert model.config == config
    tokens = random_tokens(config.text, 2, seed=0)
    assert_outputs_close(clip_outputs(model, random_images(config, 1, 0), tokens),
                         clip_outputs(reference, random_images(config, 1, 0), tokens))


def test_an_override_contradicting_the_file_is_refused(small_checkpoint):
    _, _, paths = small_checkpoint
    with pytest.raises(ShapeError, match="expected"):
        clipcore.load(paths["safetensors"], device="cpu", embed_dim=64)


def file_mapped_at(address: int) -> str | None:
    """The file whose memory map holds `address` in this process (Linux), else None."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_safetensors_in_fp32_are_used_without_a_copy(small_checkpoint):
    _, _, paths = small_checkpoint
    model, _ = clipcore.load(paths["safetensors"], device="cpu")
    # The weights live in the file's memory map: no tensor owns a fresh allocation.
    tensors = list(model.state_dict().values())
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
    assert {file_mapped_at(t.data_ptr()) for t in tensors if t.numel()} == {str(paths["safetensors"].resolve())}
    # while a converting load owns every tensor
    model, _ = clipcore.load(paths["fp16"], device="cpu")
    assert not {file_mapped_at(t.data_ptr()) for t in model.state_dict().values()} & {str(paths["fp16"].resolve())}


def resident_bytes() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024


def test_page_committer_commits_every_page_before_ready():
    from clipcore import pages

    if not Path("/proc/self/status").exists() or not pages.populate(torch.empty(1 << 20)):
        pytest.skip("madvise(MADV_POPULATE_WRITE) needs Linux >= 5.14")
    # 16 MiB each of never-touched memory (its own mapping: the heap may hand out pages already resident)
    tensors = [torch.frombuffer(mmap.mmap(-1, 16 << 20), dtype=torch.float32) for _ in range(3)]
    before = resident_bytes()
    with pages.PageCommitter(tensors) as committer:
        committer.ready(2)
        assert resident_bytes() - before >= 0.95 * 3 * (16 << 20)
    with pytest.raises(RuntimeError, match="stop"), pages.PageCommitter([torch.empty(1 << 20)] * 50) as committer:
        raise RuntimeError("stop")  # leaving early stops the thread (and waits for it)
    assert not committer._thread.is_alive()


def test_committing_pages_ahead_changes_nothing_but_time(small_checkpoint, monkeypatch):
    from clipcore import pages

    _, _, paths = small_checkpoint
    committed, _ = clipcore.load(paths["fp16"], device="cpu")
    monkeypatch.setattr(pages, "_MADVISE", None)  # as on a system without madvise(MADV_POPULATE_WRITE)
    plain, _ = clipcore.load(paths["fp16"], device="cpu")
    for (key, a), b in zip(committed.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_create_model_with_pretrained_weights(small_checkpoint):
    config, reference, paths = small_checkpoint
    model = clipcore.create_model(config, pretrained=paths["fp16"], device="cpu")
    assert model.config == config
    tokens = random_tokens(config.text, 2, seed=1)
    images = random_images(config, 2, 1)
    assert_outputs_close(clip_outputs(model, images, tokens), clip_outputs(fp16_rounded(reference), images, tokens))
    wrong = config.replace(embed_dim=64)
    with pytest.raises(ShapeError):
        clipcore.create_model(wrong, pretrained=paths["fp16"], device="cpu")


def test_create_model_without_weights_initialises_like_the_reference():
    model = clipcore.create_model("RN50", device="cpu")
    assert model.config == spec.get_model_config("RN50")
    assert torch.isclose(model.logit_scale, torch.tensor(2.6592600369)).item()
    assert not any(p.is_meta for p in model.parameters())


def test_unknown_names_and_backends_are_clear_errors(small_checkpoint, tmp_path):
    _, _, paths = small_checkpoint
    with pytest.raises(UnknownModelError, match="ViT-B/32"):
        clipcore.load("ViT-B/31", device="cpu")
    with pytest.raises(BackendError, match="eager"):
        clipcore.load(paths["safetensors"], device="cpu", backend="no-such-backend")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ClipcoreError, match=r"notes\.txt"):
        clipcore.load(tmp_path / "notes.txt", device="cpu")


def test_load_by_name_through_a_mirror(small_checkpoint, tmp_path, monkeypatch):
    """A registry name resolves to a URL, is downloaded from the mirror, verified, cached and loaded."""
    from conformance.httpserver import FileServer

    download = importlib.import_module("clipcore.download")
    config, _, paths = small_checkpoint
    data = paths["safetensors"].read_bytes()
    entry = spec.KnownCheckpoint("tiny-e2e", f"{hashlib.sha256(data).hexdigest()}/tiny.safetensors", "tiny")
    download.register_checkpoint(entry)
    try:
        with FileServer() as server:
            server.route(f"/mirror/{entry.path}", data)
            monkeypatch.setenv("CLIPCORE_MIRROR", server.url("/mirror"))
            model, _ = clipcore.load("tiny-e2e", device="cpu", download_root=tmp_path,
                                     text={"heads": 2}, vision={"head_width": 32})
            assert (tmp_path / "tiny.safetensors").read_bytes() == data
            requests = len(server.log)
            clipcore.load("tiny-e2e", device="cpu", download_root=tmp_path)  # cached: no second request
            assert len(server.log) == requests
    finally:
        download.unregister_checkpoint("tiny-e2e")
    assert model.config == config


def test_available_models_are_openais_then_the_bundled_ones():
    clip = import_openai_clip()
    names = clipcore.available_models()
    assert names[: len(clip.available_models())] == clip.available_models()
    assert names[len(clip.available_models()) :] == ["demo"]
    model, preprocess = clipcore.load(names[-1], device="cpu")  # bundled: no download, no network
    assert preprocess.size == model.config.vision.image_size_hw
