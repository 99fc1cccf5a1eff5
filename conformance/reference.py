"""Access to the reference implementations (open-clip-torch and OpenAI's `clip`), for tests only."""

from __future__ import annotations

import sys
import types


def import_openai_clip():
    """Import OpenAI's `clip` package (installed as clip-anytorch).

    Its `clip.py` does `from pkg_resources import packaging`, and the setuptools that torch 2.14 pulls
    no longer ships `pkg_resources`; a stand-in module built on `packaging` is all it needs.
    """
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        stand_in = types.ModuleType("pkg_resources")
        stand_in.packaging = packaging
        sys.modules["pkg_resources"] = stand_in
    import clip

    return clip


def openclip_model(config, device: str = "cpu"):
    """The reference model (open_clip's CLIP or CustomTextCLIP) for a `spec.ClipConfig`, built by open_clip.

    Built from the config's OpenCLIP JSON form exactly as `open_clip.create_model` would choose the class.
    On the meta device nothing is allocated, so even the largest configs are cheap to inspect.
    """
    import torch
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = config.to_openclip()
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    cls = CustomTextCLIP if custom else CLIP
    with torch.device(device):
        return cls(**cfg)


def openai_model_on_meta(name: str):
    """OpenAI's own `clip.model.CLIP` for one of its nine architectures, on the meta device.

    Hyperparameters are those of OpenAI's released files (see shared/research/openai_clip.md), so this is a
    state-dict layout that does not come from clipcore or OpenCLIP.
    """
    import torch

    clip = import_openai_clip()
    args = _OPENAI_ARCHITECTURES[name]
    with torch.device("meta"):
        return clip.model.CLIP(*args)


# name -> (embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
#          context_length, vocab_size, transformer_width, transformer_heads, transformer_layers)
_OPENAI_ARCHITECTURES = {
    "RN50": (1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN101": (512, 224, (3, 4, 23, 3), 64, None, 77, 49408, 512, 8, 12),
    "RN50x4": (640, 288, (4, 6, 10, 6), 80, None, 77, 49408, 640, 10, 12),
    "RN50x16": (768, 384, (6, 8, 18, 8), 96, None, 77, 49408, 768, 12, 12),
    "RN50x64": (1024, 448, (3, 15, 36, 10), 128, None, 77, 49408, 1024, 16, 12),
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
}


def perturb(model, seed: int = 0):
    """Move every tensor of `model` off its initial value, so that a swapped or misnamed tensor shows.

    One-dimensional tensors (LayerNorm and BatchNorm weights, biases, running statistics, embeddings of one
    row) get random noise: their initial values are ones and zeros. Larger tensors are random already and
    are scaled by a factor that differs between neighbours (cheap, even for billions of values). Integer
    buffers get distinct values.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for index, tensor in enumerate(model.state_dict().values()):
            if not tensor.is_floating_point():
                tensor.fill_(index + 3)
            elif tensor.dim() <= 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * 0.1)
            else:
                tensor.mul_(1.0 + 0.05 * (index % 11) / 11)
    return model.eval()


def half_state_dict(state_dict: dict) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def trace_like_openai(
    model, path, image_size, context_length: int, vocab_size: int, dtype=None, methods=("encode_text",)
):
    """Save `model` as a TorchScript archive shaped like OpenAI's released files.

    `torch.jit.trace_module` over the listed methods (every parameter of the module tree is saved, whichever
    methods are traced), with the three root scalar buffers the released archives carry.
    """
    import copy
    import warnings

    import torch

    # Trace in float32 (half-precision LayerNorm does not run on a CPU), then store the weights in `dtype`:
    # the released archives were traced on a GPU; a weights reader never runs the graph.
    model = copy.deepcopy(model).float()
    for name in ("context_length", "vocab_size"):  # plain ints on the reference classes: make room
        model.__dict__.pop(name, None)
    resolution = image_size if isinstance(image_size, int) else max(image_size)
    for name, value in (("input_resolution", resolution), ("context_length", context_length),
                        ("vocab_size", vocab_size)):
        model.register_buffer(name, torch.tensor(value))
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    inputs = {
        "encode_image": (torch.randn(1, 3, h, w),),
        "encode_text": (torch.randint(0, vocab_size, (1, context_length)),),
    }
    inputs["forward"] = inputs["encode_image"] + inputs["encode_text"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {m: inputs[m] for m in methods}, check_trace=False)
        if dtype is not None:
            traced = traced.to(dtype)
        torch.jit.save(traced, str(path))


def save_formats(model, folder, image_size, context_length: int, vocab_size: int, formats=None) -> dict:
    """Save a reference model's weights the ways users hold CLIP checkpoints; returns {format: path}.

    Formats: `fp32` and `fp16` torch.save state dicts, `legacy` (fp32, torch's old non-zip format),
    `safetensors` (fp32), `training` (an OpenCLIP training
    checkpoint: {"epoch", "name", "state_dict" with `module.` prefixes}), `torchscript` (fp16, traced like
    OpenAI's released archives). The file names carry no extension: formats are told by their bytes.
    """
    from pathlib import Path

    import safetensors.torch
    import torch

    folder = Path(folder)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    writers = {
        "fp32": lambda p: torch.save(state, p),
        "fp16": lambda p: torch.save(half_state_dict(state), p),
        "legacy": lambda p: torch.save(state, p, _use_new_zipfile_serialization=False),
        "safetensors": lambda p: safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, p),
        "training": lambda p: torch.save(
            {"epoch": 3, "name": "reference-run", "state_dict": {"module." + k: v for k, v in state.items()}}, p
        ),
        "torchscript": lambda p: trace_like_openai(model, p, image_size, context_length, vocab_size, torch.float16),
    }
    paths = {}
    for name in formats or writers:
        paths[name] = folder / f"checkpoint-{name}"
        writers[name](paths[name])
    return paths
