"""Checkpoint readers against the reference: every file the reference stack writes reads back bit for bit.

Small OpenCLIP models (a ViT and a ModifiedResNet, every tensor perturbed so a swapped tensor shows) and
OpenAI `clip` models are saved the ways users hold CLIP weights: torch.save state dicts (fp32, fp16, zip
and legacy), safetensors, OpenCLIP training checkpoints and TorchScript archives traced like OpenAI's
released files. Hugging Face CLIPModel weights are converted and must give the reference's embeddings.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import safetensors.torch
import torch
from open_clip.model import CLIP, build_model_from_openai_state_dict

from clipcore.checkpoint import FORMATS, Checkpoint, detect_format, open_checkpoint, read_state_dict
from clipcore.checkpoint.files import RandomAccessFile
from clipcore.checkpoint.safetensors import SafetensorsTensor
from clipcore.errors import CheckpointError
from conformance import hostile
from conformance.reference import import_openai_clip

TEXT = dict(context_length=16, vocab_size=100, width=32, heads=2, layers=2)
OPEN_CLIP = {
    "vit": dict(embed_dim=32, vision_cfg=dict(layers=2, width=64, patch_size=8, image_size=32, head_width=32),
                text_cfg=TEXT),
    "resnet": dict(embed_dim=32, vision_cfg=dict(layers=(1, 2, 1, 1), width=16, image_size=64, head_width=16),
                   text_cfg=TEXT),
}
IMAGE_SIZE = {"vit": 32, "resnet": 64}
# OpenAI's CLIP(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size, context_length,
# vocab_size, transformer_width, transformer_heads, transformer_layers)
OPENAI = {"vit": (32, 32, 2, 64, 8, 16, 100, 32, 2, 2), "resnet": (32, 64, (1, 1, 1, 1), 16, None, 16, 100, 32, 2, 2)}


def perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor moved off its initial value (LayerNorm ones/zeros too); integer buffers made distinct."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index, tensor in enumerate(model.state_dict().values()):
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * 0.1)
            else:
                tensor.fill_(index + 3)
    return model.eval()


def open_clip_model(arch: str) -> CLIP:
    torch.manual_seed(0)
    return perturbed(CLIP(**OPEN_CLIP[arch]), seed=1)


def openai_fp16_model(arch: str) -> torch.nn.Module:
    """OpenAI's own CLIP class, converted to its mixed fp16/fp32 layout like the released weights."""
    clip = import_openai_clip()
    torch.manual_seed(0)
    model = perturbed(clip.model.CLIP(*OPENAI[arch]), seed=2)
    clip.model.convert_weights(model)
    return model


def trace_like_openai(model: torch.nn.Module, path: Path, image_size: int) -> None:
    """torch.jit.trace with encode_image/encode_text and the three root scalars of the released archives."""
    model = copy.deepcopy(model)
    for name in ("context_length", "vocab_size"):  # plain ints on the reference classes: make room
        model.__dict__.pop(name, None)
    for name, value in (("input_resolution", image_size), ("context_length", 16), ("vocab_size", 100)):
        model.register_buffer(name, torch.tensor(value))
    image, text = torch.randn(1, 3, image_size, image_size), torch.randint(0, 100, (1, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model, {"forward": (image, text), "encode_image": (image,), "encode_text": (text,)}, check_trace=False)
        torch.jit.save(traced, path)


def half(state_dict: dict) -> dict:
    return {key: value.half() if value.is_floating_point() else value for key, value in state_dict.items()}


# --- the reference files -----------------------------------------------------------------------------------


def write_reference_files(folder: Path, arch: str) -> dict[str, tuple[Path, str, dict, dict]]:
    """name -> (file, expected format, expected tensors, expected metadata items)."""
    model = open_clip_model(arch)
    sd = {key: value.clone() for key, value in model.state_dict().items()}
    files = {}

    def add(name: str, fmt: str, expected: dict, metadata: dict | None = None) -> Path:
        path = folder / f"{arch}-{name}.bin"  # one uninformative extension: the format comes from the bytes
        files[name] = (path, fmt, expected, metadata or {})
        return path

    torch.save(model.state_dict(), add("fp32", "torch-zip", sd))
    torch.save(half(sd), add("fp16", "torch-zip", half(sd)))
    torch.save(sd, add("legacy", "torch-legacy", sd), _use_new_zipfile_serialization=False)
    torch.save(half(sd), add("legacy-fp16", "torch-legacy", half(sd)), _use_new_zipfile_serialization=False)
    safetensors.torch.save_file(sd, add("safetensors", "safetensors", sd, {"safetensors": {"format": "pt"}}),
                                metadata={"format": "pt"})
    safetensors.torch.save_file(half(sd), add("safetensors-fp16", "safetensors", half(sd)))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # a real optimizer state, full of tensors
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    model.load_state_dict(sd)
    training = {"epoch": 7, "name": "tiny-run", "state_dict": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": optimizer.state_dict(), "scaler": {"scale": 65536.0}}
    torch.save(training, add("training", "torch-zip", sd, {
        "epoch": 7, "name": "tiny-run", "wrapper": "state_dict", "prefix": "module.",
        "ignored": ["epoch", "name", "optimizer", "scaler"]}))

    trace_like_openai(model, add("torchscript", "torchscript", sd, {
        "input_resolution": IMAGE_SIZE[arch], "context_length": 16, "vocab_size": 100, "dropped": ["attn_mask"],
        "torchscript_class": re.compile(r"__torch__\.open_clip\.model\.(___torch_mangle_\d+\.)?CLIP"),
    }), IMAGE_SIZE[arch])
    openai = openai_fp16_model(arch)
    openai_sd = {key: value.clone() for key, value in openai.state_dict().items()}
    trace_like_openai(openai, add("torchscript-openai-fp16", "torchscript", openai_sd, {
        "input_resolution": IMAGE_SIZE[arch], "context_length": 16, "vocab_size": 100,
        "torchscript_class": re.compile(r"__torch__\.clip\.model\.(___torch_mangle_\d+\.)?CLIP")}), IMAGE_SIZE[arch])
    return files


@pytest.fixture(scope="module")
def reference_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    return {arch: write_reference_files(folder, arch) for arch in OPEN_CLIP}


CASES = ["fp32", "fp16", "legacy", "legacy-fp16", "safetensors", "safetensors-fp16", "training", "torchscript",
         "torchscript-openai-fp16"]


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor's elements, for bit-for-bit comparison (-0.0 vs 0.0, any NaN payload)."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def assert_identical(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        assert torch.equal(bits(got[key]), bits(value)), key


@contextlib.contextmanager
def no_tensor_reads():
    """While active, any read of tensor bytes (from the file or from a memory map) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was read")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RandomAccessFile, "read_into", refuse)
        patch.setattr(SafetensorsTensor, "read", refuse)
        yield


@pytest.mark.parametrize("arch", list(OPEN_CLIP))
@pytest.mark.parametrize("case", CASES)
def test_reference_files_read_back_bit_for_bit(reference_files, arch, case):
    path, fmt, expected, metadata = reference_files[arch][case]
    assert detect_format(path) == fmt
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.format == fmt and checkpoint.path == path
        for key, value in metadata.items():  # class names of traced modules may carry a mangle
            got = checkpoint.metadata[key]
            assert value.fullmatch(got) if isinstance(value, re.Pattern) else got == value, (key, got)
        with no_tensor_reads():
            shapes, dtypes = checkpoint.shapes(), checkpoint.dtypes()
        assert shapes == {key: tuple(value.shape) for key, value in expected.items()}
        assert dtypes == {key: value.dtype for key, value in expected.items()}
        assert len(checkpoint) == len(expected) and all(key in checkpoint for key in expected)
        got = {key: checkpoint.get(key) for key in checkpoint}
    assert_identical(got, expected)
    if fmt != "safetensors":  # pickled formats keep the state dict's order (safetensors sorts its header)
        assert list(got) == list(expected)


@pytest.mark.parametrize("case", ["fp16", "legacy-fp16", "safetensors-fp16", "torchscript-openai-fp16"])
def test_dtype_converts_floating_tensors_only(reference_files, case):
    path, _, expected, _ = reference_files["resnet"][case]  # the ResNet has int64 num_batches_tracked
    got = read_state_dict(path, torch.float32)
    for key, value in expected.items():
        if value.is_floating_point():
            assert got[key].dtype == torch.float32 and torch.equal(got[key], value.float()), key
        else:
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    assert any(not value.is_floating_point() for value in expected.values())


def test_the_loaded_state_dict_builds_the_reference_model(reference_files):
    """The reference's own strict loader accepts what the TorchScript reader returns."""
    path, _, expected, _ = reference_files["resnet"]["torchscript"]
    model = CLIP(**OPEN_CLIP["resnet"])
    model.load_state_dict(read_state_dict(path), strict=True)
    assert_identical(model.state_dict(), expected)


def test_opening_reads_headers_not_tensors(reference_files, monkeypatch):
    read: list[int] = []
    original = RandomAccessFile._readinto

    def counting(self, offset, view, what):
        read.append(len(view))
        return original(self, offset, view, what)

    monkeypatch.setattr(RandomAccessFile, "_readinto", counting)
    for arch_files in reference_files.values():
        for path, _, expected, _ in arch_files.values():
            read.clear()
            open_checkpoint(path).close()
            tensor_bytes = sum(value.numel() * value.element_size() for value in expected.values())
            assert sum(read) < 0.25 * tensor_bytes, path.name  # the pickle or header, and 3 scalars at most


# --- views, shared storages and every dtype ---------------------------------------------------------------


def strided_tensors() -> dict[str, torch.Tensor]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 3
    tensors = {
        "base": base, "row": base[1], "column": base[:, 2], "transposed": base.t(), "every_other": base[:, ::2],
        "tail": base.view(-1)[5:], "tied": base, "broadcast": torch.tensor([1.5, 2.5]).expand(3, 2),
        "scalar": torch.tensor(2.5), "empty": torch.empty(0, 3), "bool": torch.tensor([True, False, True]),
        "int64": torch.tensor([-(2**40), 7]), "int8": torch.tensor([-3, 4], dtype=torch.int8),
        "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16), "f64": torch.tensor([1e-300]),
        "u16": torch.tensor([0, 1, 65535]).to(torch.uint16), "neg_zero": torch.tensor([-0.0, float("nan")]),
    }
    if hasattr(torch, "float8_e4m3fn"):
        tensors["f8"] = torch.tensor([0.5, -1.0]).to(torch.float8_e4m3fn)
    return tensors


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_into_shared_storages(tmp_path, legacy, protocol):
    tensors = strided_tensors()
    path = tmp_path / "views.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=protocol)
    with open_checkpoint(path) as checkpoint:
        got = {key: checkpoint.get(key) for key in checkpoint}
        half = checkpoint.get("every_other", torch.float16)
    assert_identical(got, tensors)
    for key in ("base", "row", "transposed", "tail", "broadcast"):
        assert got[key].stride() == tensors[key].stride(), key  # dense views keep their layout
    # Each tensor owns just its own elements, not the 24-element storage it was a view of.
    assert got["row"].untyped_storage().nbytes() == 6 * 4
    assert got["tail"].untyped_storage().nbytes() == 19 * 4
    assert got["column"].untyped_storage().nbytes() == 4 * 4 and got["column"].is_contiguous()
    assert got["every_other"].untyped_storage().nbytes() == 12 * 4
    assert half.dtype == torch.float16 and torch.equal(half, tensors["every_other"].half())
    assert half.untyped_storage().nbytes() == 12 * 2
    got["base"][0, 0] = 100.0  # tied keys are independent tensors once read
    assert got["tied"][0, 0] == tensors["base"][0, 0]


def test_parameters_and_storages_saved_on_a_gpu(tmp_path):
    """nn.Parameters rebuild as plain tensors; a storage's saved location (cuda:0) is not needed to read it."""
    linear = torch.nn.Linear(3, 2)
    path = tmp_path / "p.pt"
    torch.save({"weight": linear.weight, "bias": linear.bias.detach()}, path)
    moved = hostile.rewrite_zip(path, tmp_path / "cuda.pt", lambda name, data: data.replace(
        b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0") if name.endswith("data.pkl") else data)
    assert b"cuda:0" in moved.read_bytes()
    for file in (path, moved):
        got = read_state_dict(file)
        assert type(got["weight"]) is torch.Tensor and got["weight"].device.type == "cpu"
        assert torch.equal(got["weight"], linear.weight.detach()) and torch.equal(got["bias"], linear.bias.detach())


def test_safetensors_in_the_stored_dtype_come_from_the_memory_map(tmp_path):
    tensors = {"a": torch.randn(64, 64), "b": torch.arange(10)}
    path = tmp_path / "x.safetensors"
    safetensors.torch.save_file(tensors, path)
    checkpoint = open_checkpoint(path)
    first, second = checkpoint.get("a"), checkpoint.get("a")
    assert first.data_ptr() == second.data_ptr()  # both views of the one map: no copy was made
    converted = checkpoint.get("a", torch.float16)
    assert converted.data_ptr() != first.data_ptr() and torch.equal(converted, tensors["a"].half())
    assert checkpoint.maps("a") and not checkpoint.maps("a", torch.float16)
    checkpoint.close()
    del checkpoint, second
    gc.collect()
    assert torch.equal(first, tensors["a"])  # returned tensors outlive the handle (and its map object)
    first += 1  # the map is copy-on-write: the file never changes
    assert torch.equal(read_state_dict(path)["a"], tensors["a"])
    # each tensor is its own view, so a state dict read this way can be saved by safetensors again
    safetensors.torch.save_file(read_state_dict(path), tmp_path / "again.safetensors")


def test_get_into_a_given_tensor(tmp_path):
    path = tmp_path / "x.safetensors"
    safetensors.torch.save_file({"a": torch.randn(3, 5), "n": torch.arange(4)}, path)
    with open_checkpoint(path) as checkpoint:
        out = torch.empty(3, 5, dtype=checkpoint.dtype_of("a", torch.float64))
        assert checkpoint.get("a", torch.float64, out=out) is out
        assert torch.equal(out, checkpoint.get("a").double())
        assert checkpoint.dtype_of("n", torch.float16) == torch.int64  # integers keep their dtype
        for bad in (torch.empty(5, 3, dtype=torch.float64), torch.empty(3, 5)):
            with pytest.raises(CheckpointError, match="out= for 'a'"):
                checkpoint.get("a", torch.float64, out=bad)


# --- unwrapping ----------------------------------------------------------------------------------------------


def _saved(tmp_path: Path, obj: object) -> Checkpoint:
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    return open_checkpoint(path)


def test_module_prefix_is_removed_only_when_every_key_has_it(tmp_path):
    t = torch.ones(2)
    with _saved(tmp_path, {"module.a": t, "module.b": t}) as checkpoint:
        assert checkpoint.keys() == ["a", "b"] and checkpoint.metadata["prefix"] == "module."
    with _saved(tmp_path, {"module.a": t, "b": t}) as checkpoint:  # the reference strips on the first key
        assert checkpoint.keys() == ["module.a", "b"] and "prefix" not in checkpoint.metadata
    with _saved(tmp_path, {"modulea": t, "moduleb": t}) as checkpoint:  # "module" without the dot
        assert checkpoint.keys() == ["modulea", "moduleb"]


@pytest.mark.parametrize(
    ("obj", "keys", "metadata"),
    [
        ({"model": {"w": 1}}, None, "without tensors"),
        ({"model": {"w": torch.ones(1)}, "step": 12}, ["w"], {"wrapper": "model", "step": 12}),
        ({"model_state_dict": {"w": torch.ones(1)}}, ["w"], {"wrapper": "model_state_dict"}),
        ({"state_dict": {"w": torch.ones(1)}, "model": {"v": torch.ones(1)}}, ["w"],
         {"wrapper": "state_dict", "ignored": ["model"]}),
        ({"model": {"state_dict": {"module.w": torch.ones(1)}}, "epoch": 2}, ["w"],
         {"wrapper": "model.state_dict", "prefix": "module.", "epoch": 2}),
        ({"model": {"w": torch.ones(1)}, "module": {"w": torch.ones(1)}}, None, "could be under any of"),
        ({"w": torch.ones(1), "_extra": [1, 2], "version": 3}, ["w"], {"ignored": ["_extra", "version"],
                                                                       "version": 3}),
        ({}, None, "holds no tensors|without tensors"),
        ([torch.ones(1)], None, "holds a list"),
        (torch.ones(1), None, "holds a TensorRef|not a dict"),
    ],
)
def test_wrappers(tmp_path, obj, keys, metadata):
    if keys is None:
        with pytest.raises(CheckpointError, match=metadata):
            _saved(tmp_path, obj)
        return
    with _saved(tmp_path, obj) as checkpoint:
        assert checkpoint.keys() == keys
        for key, value in metadata.items():
            assert checkpoint.metadata[key] == value


def test_openai_root_scalars_become_metadata_in_any_format(tmp_path):
    sd = {"visual.proj": torch.ones(2, 2), "input_resolution": torch.tensor(224),
          "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}
    safetensors.torch.save_file(sd, tmp_path / "s")
    with open_checkpoint(tmp_path / "s") as checkpoint:
        assert checkpoint.keys() == ["visual.proj"]
        assert (checkpoint.metadata["input_resolution"], checkpoint.metadata["vocab_size"]) == (224, 49408)
        assert type(checkpoint.metadata["context_length"]) is int


# --- the handle ---------------------------------------------------------------------------------------------


def test_a_zip_rewritten_in_place_is_read_again(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"a": torch.ones(3), "b": torch.zeros(2)}, path)
    assert detect_format(path) == "torch-zip"
    open_checkpoint(path).close()  # the directory parse is now cached
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last central directory entry; its name starts 46 bytes in
    data[entry + 46 + 2] ^= 0x01  # same size, same file: only the directory's copy of a name differs
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        open_checkpoint(path)


def test_checkpoint_handle(tmp_path):
    path = tmp_path / "h.pt"
    torch.save({"visual.conv1.weight": torch.ones(2, 3), "logit_scale": torch.tensor(4.6)}, path)
    checkpoint = open_checkpoint(os.fspath(path))
    assert list(checkpoint) == ["visual.conv1.weight", "logit_scale"] and "logit_scale" in checkpoint
    assert "2 tensors" in repr(checkpoint) and FORMATS == ("safetensors", "torch-zip", "torchscript",
                                                            "torch-legacy")
    with pytest.raises(CheckpointError, match=r"close: visual\.conv1\.weight"):
        checkpoint.get("visual.conv1.weights")
    with pytest.raises(CheckpointError, match="floating-point"):
        checkpoint.get("logit_scale", torch.int32)
    with pytest.raises(CheckpointError, match="floating-point"):
        checkpoint.get("logit_scale", "float16")
    assert checkpoint.to_state_dict(torch.bfloat16)["logit_scale"].dtype == torch.bfloat16
    checkpoint.close()
    checkpoint.close()  # idempotent
    assert checkpoint.shapes() == {"visual.conv1.weight": (2, 3), "logit_scale": ()}  # still known
    with pytest.raises(CheckpointError, match="closed"):
        checkpoint.get("logit_scale")


# --- Hugging Face transformers CLIPModel ------------------------------------------------------------------


def hf_clip(act: str):
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=100, hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                max_position_embeddings=16, hidden_act=act, bos_token_id=98, eos_token_id=99, pad_token_id=0)
    vision = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                  image_size=32, patch_size=8, hidden_act=act)
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    return perturbed(CLIPModel(config), seed=3)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hugging_face_clip_converts_to_the_openai_layout(tmp_path, act):
    hf = hf_clip(act)
    path = tmp_path / "hf.bin"
    hf_sd = hf.state_dict()
    hf_sd["text_model.embeddings.position_ids"] = torch.arange(16)[None]  # older transformers saved these
    torch.save(hf_sd, path)
    with open_checkpoint(path) as checkpoint:
        assert checkpoint.metadata["layout"] == "huggingface"
        shapes = checkpoint.shapes()
        assert shapes["visual.transformer.resblocks.1.attn.in_proj_weight"] == (192, 64)
        assert shapes["transformer.resblocks.0.attn.in_proj_bias"] == (192,)
        assert shapes["visual.proj"] == (64, 32) and shapes["text_projection"] == (64, 32)
        assert not any("position_ids" in key for key in shapes)
        state_dict = checkpoint.to_state_dict()
        assert {key: tuple(value.shape) for key, value in state_dict.items()} == shapes

    # The reference's own OpenAI-layout builder infers the architecture and loads strictly; it rounds to
    # fp16 on the way, so the fp32 weights are then loaded again into its fp32 copy.
    model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=act == "quick_gelu",
                                               cast_dtype=torch.float32).float()
    model.load_state_dict(state_dict, strict=True)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    texts = torch.zeros(3, 16, dtype=torch.long)
    for row, length in enumerate((4, 9, 16)):
        texts[row, 0] = 98
        texts[row, 1 : length - 1] = torch.randint(1, 97, (length - 2,))
        texts[row, length - 1] = 99  # end of text, the largest id: both sides pool there
    with torch.no_grad():
        hf_out = hf(input_ids=texts, pixel_values=images)
        image, text = model.encode_image(images), model.encode_text(texts)
        logits = model.logit_scale.exp() * (image / image.norm(dim=-1, keepdim=True)) @ (
            text / text.norm(dim=-1, keepdim=True)).T
    assert relative_error(image, hf.get_image_features(pixel_values=images).pooler_output) <= 1e-5
    assert relative_error(text, hf.get_text_features(input_ids=texts).pooler_output) <= 1e-5
    assert relative_error(logits, hf_out.logits_per_image) <= 1e-5


@pytest.mark.parametrize("writer", ["torch", "safetensors"])
def test_hugging_face_fp16_packs_and_transposes_in_the_target_dtype(tmp_path, writer):
    sd = {key: value.half() for key, value in hf_clip("gelu").state_dict().items()}
    path = tmp_path / "hf16"
    if writer == "torch":
        torch.save(sd, path)
    else:
        safetensors.torch.save_file(sd, path)
    got = read_state_dict(path, torch.float32)
    parts = [sd[f"text_model.encoder.layers.1.self_attn.{x}_proj.bias"] for x in "qkv"]
    assert torch.equal(got["transformer.resblocks.1.attn.in_proj_bias"], torch.cat(parts).float())
    assert got["visual.proj"].is_contiguous()
    assert torch.equal(got["visual.proj"], sd["visual_projection.weight"].t().float())
    assert all(value.dtype == torch.float32 for value in got.values())


def test_hugging_face_folders(tmp_path):
    hf = hf_clip("quick_gelu")
    expected = read_state_dict(_torch_file(tmp_path / "ref.bin", hf.state_dict()))
    hf.save_pretrained(tmp_path / "single")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "bin").mkdir()
    _torch_file(tmp_path / "bin" / "pytorch_model.bin", hf.state_dict())
    for folder, files in (("single", ["model.safetensors"]), ("bin", ["pytorch_model.bin"]), ("sharded", None)):
        assert detect_format(tmp_path / folder) == ("torch-zip" if folder == "bin" else "safetensors")
        with open_checkpoint(tmp_path / folder) as checkpoint:
            assert checkpoint.metadata["layout"] == "huggingface"
            if files:
                assert checkpoint.metadata["files"] == files
            else:
                assert len(checkpoint.metadata["files"]) > 1
            if folder != "bin":
                assert checkpoint.metadata["hf_config"]["text_config"]["hidden_act"] == "quick_gelu"
            assert_identical(checkpoint.to_state_dict(), expected)


def _torch_file(path: Path, state_dict: dict) -> Path:
    torch.save(state_dict, path)
    return path


# --- memory: reading tensor by tensor ------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from clipcore.checkpoint import open_checkpoint

    def status(field):  # VmRSS / VmHWM (peak) of this process; ru_maxrss would start from pytest's peak
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024

    def bytes_read():
        with open("/proc/self/io") as f:
            return int(next(line for line in f if line.startswith("rchar")).split()[1])

    results = {}
    for mode in ("drop", "keep"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak to the current size
        start, read0 = status("VmRSS"), bytes_read()
        with open_checkpoint(sys.argv[1]) as checkpoint:
            checkpoint.shapes()
            opened = bytes_read() - read0
            kept = []
            for key in checkpoint:
                tensor = checkpoint.get(key, torch.float32)
                if mode == "keep":
                    kept.append(tensor)
                del tensor
        results[mode] = {"growth": status("VmHWM") - start, "opened_read": opened,
                         "total_read": bytes_read() - read0}
        del kept
    print(json.dumps(results))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc memory accounting")
@pytest.mark.parametrize("fmt", ["torch-zip", "safetensors"])
def test_reading_tensor_by_tensor_holds_one_tensor_at_a_time(tmp_path, fmt):
    tensors = {f"w{i}": torch.full((2_000_000,), i / 3, dtype=torch.float16) for i in range(50)}  # 200 MB
    path = tmp_path / "big"
    if fmt == "torch-zip":
        torch.save(tensors, path)
    else:
        safetensors.torch.save_file(tensors, path)
    del tensors
    file_size, fp32_size = path.stat().st_size, 50 * 2_000_000 * 4
    probe = tmp_path / "probe.py"
    probe.write_text(_MEMORY_PROBE)
    out = subprocess.run([sys.executable, str(probe), str(path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    results = json.loads(out.stdout.strip().splitlines()[-1])
    # Opening reads the header only; then each tensor is read once.
    assert results["drop"]["opened_read"] < 1 << 20, results
    assert results["drop"]["total_read"] < 1.05 * file_size, results
    # Dropping each converted tensor: memory holds one tensor at a time (4 + 8 MB) plus what the C allocator
    # keeps cached (up to ~50 MB seen), where reading the file whole and converting needs file + fp32 = 600 MB.
    assert results["drop"]["growth"] < 100 << 20, results
    # Keeping them, as a loader assigning into a model does: the fp32 result and little else.
    assert results["keep"]["growth"] < 1.05 * fp32_size + (24 << 20), results


# --- data files a TorchScript archive carries ----------------------------------------------------------------


def _archive_with_extra(path: Path, extra: str | None) -> Path:
    files = {} if extra is None else {"open_clip_config.json": extra}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; here it only writes a test file
        module = torch.jit.script(torch.nn.Linear(3, 2))
        torch.jit.save(module, str(path), _extra_files=files)
    return path


def test_archive_extra_config_becomes_metadata(tmp_path):
    config = {"model_cfg": {"embed_dim": 2}}
    with open_checkpoint(_archive_with_extra(tmp_path / "with.pt", json.dumps(config))) as checkpoint:
        assert checkpoint.metadata["open_clip_config"] == config
    with open_checkpoint(_archive_with_extra(tmp_path / "without.pt", None)) as checkpoint:
        assert "open_clip_config" not in checkpoint.metadata


@pytest.mark.parametrize("extra", ["{not json", "[1, 2]"])
def test_archive_extra_config_that_is_not_a_json_object_is_refused(tmp_path, extra):
    with pytest.raises(CheckpointError, match=r"extra/open_clip_config\.json"):
        open_checkpoint(_archive_with_extra(tmp_path / "bad.pt", extra))
