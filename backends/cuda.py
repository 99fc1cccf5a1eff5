"""The `cuda-fp16` and `cuda-bf16` backends: clipcore's modules in half precision, tuned for GPU inference.

    model, preprocess = clipcore.load("ViT-B-16.pt", backend="cuda-fp16")
    model, preprocess = clipcore.load("model.safetensors", backend="cuda-bf16", compile=True)
    features = model.encode_image_uint8(preprocess.batch(files, output="uint8"))

What the model does differently from the eager backend's float32:
- Weights in OpenAI's mixed-precision layout (backends/precision.py): convolutions, linear layers and
  projections in float16 (bfloat16); LayerNorm/BatchNorm tensors, embeddings and the logit scale in float32.
  LayerNorm computes its statistics in float32 (clipcore's LayerNorm); softmax statistics are float32 inside
  the fused attention kernels.
- Attention runs through `F.scaled_dot_product_attention` (clipcore's towers already do): the text tower
  passes `is_causal=True` instead of a mask, so torch can pick the flash or memory-efficient kernel.
- ResNet image towers run in `channels_last` (`channels_last=True`), the layout cuDNN's tensor-core
  convolutions want; weights and inputs are converted once.
- Text batches are trimmed to their longest row (`trim_text=True`): the causal mask means a position never
  sees the padding after it, so the features at the pooled token are the same, and a batch of short
  captions costs far less than 77 positions. The length is rounded up to a multiple of 8 (tensor-core
  friendly, and few distinct shapes for `torch.compile`).
- `compile=True` puts the image tower and the text transformer through `torch.compile` (`Module.compile`,
  in place: the state-dict keys stay the same); a string picks a torch.compile backend by name.
- Every encode runs under `torch.inference_mode()`.
- `encode_image_uint8` takes `Preprocess.batch(..., output="uint8")` output: the bytes are copied from
  pinned memory without blocking, then normalised on the GPU (backends/model.py).

The model-building code (`build_half`) runs on any device, so the CPU can check the same path in float16 or
bfloat16 where torch implements the kernels; only the registered factories insist on CUDA.
"""

from __future__ import annotations

import torch

import backends
from backends.model import ClipModel, adopt
from backends.precision import HALF_DTYPES, half_rule
from clipcore.assemble import assemble
from clipcore.checkpoint import Checkpoint
from clipcore.errors import BackendError
from clipcore.towers import CLIP
from spec import ClipConfig

__all__ = ["HalfCLIP", "build_half", "cuda_bf16", "cuda_fp16"]

TEXT_LENGTH_MULTIPLE = 8
# Pools whose feature comes from a non-padding position, so trailing padding can be dropped (not 'last',
# which takes the final position padding included, nor 'none', which returns every position).
TRIMMABLE_POOLS = ("argmax", "eos", "first")


class HalfCLIP(ClipModel, CLIP):
    """clipcore's CLIP in half precision, as the CUDA backends return it (see the module docstring)."""

    trim_text = False  # set by build_half where dropping trailing padding is exact

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with torch.inference_mode():
            if self.input_channels_last and image.dim() == 4:
                image = image.to(dtype=self.dtype, memory_format=torch.channels_last)
            return super().encode_image(image, normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with torch.inference_mode():
            if self.trim_text:
                text = trim_padding(text, self.text_pad_id if self.text is None else self.text.text_pad_id)
            return super().encode_text(text, normalize)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            return super().forward(image, text)


def trim_padding(text: torch.Tensor, pad_id: int) -> torch.Tensor:
    """`text` without the padding columns every row has at its end (kept: a multiple of 8, at least 1)."""
    if text.dim() != 2 or text.shape[1] == 0:
        return text  # let the tower report the bad shape
    filled = (text != pad_id).any(dim=0).nonzero()
    used = int(filled[-1]) + 1 if len(filled) else 1  # one host sync per batch
    keep = min(text.shape[1], -(-used // TEXT_LENGTH_MULTIPLE) * TEXT_LENGTH_MULTIPLE)
    return text[:, :keep]


def can_trim_text(config: ClipConfig) -> bool:
    """Whether dropping trailing padding leaves the text features unchanged (see the module docstring)."""
    text = config.text
    return (text.kind == "transformer" and not text.no_causal_mask and not text.embed_cls
            and text.pool_type in TRIMMABLE_POOLS)


def build_half(
    config: ClipConfig,
    checkpoint: Checkpoint,
    device: str | torch.device,
    dtype: torch.dtype = torch.float16,
    *,
    channels_last: bool = True,
    trim_text: bool = True,
    compile: bool | str = False,
) -> HalfCLIP:
    """`config`'s model with `checkpoint`'s weights on `device` in OpenAI's half-precision layout in `dtype`."""
    if dtype not in HALF_DTYPES:
        raise BackendError(f"half precision means float16 or bfloat16, got {dtype}")
    device = torch.device(device)
    model = adopt(assemble(config, checkpoint, device, half_rule(config, dtype)), HalfCLIP)
    if channels_last and config.vision.kind == "resnet":
        model.visual.to(memory_format=torch.channels_last)  # 4-d weights only; others are unaffected
        model.input_channels_last = True
    model.trim_text = trim_text and can_trim_text(config)
    if compile:
        options = {} if compile is True else {"backend": compile}
        model.visual.compile(**options)
        # The text tower's stack of blocks (encode_text calls it; the tower's own forward is not used there).
        text_blocks = getattr(model if model.text is None else model.text, "transformer", None)
        if isinstance(text_blocks, torch.nn.Module):
            text_blocks.compile(**options)
    return model


def cuda_unavailable() -> str | None:
    if not torch.cuda.is_available():
        return "CUDA is not available (torch.cuda.is_available() is False)"
    return None


def bf16_unavailable() -> str | None:
    reason = cuda_unavailable()
    if reason is None and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name()} has no bfloat16 support (compute capability 8.0 or newer needed)"
    return reason


def _check_device(name: str, device: torch.device) -> None:
    if device.type != "cuda":
        raise BackendError(f"backend {name!r} runs on a CUDA device, got device={str(device)!r}",
                           fix="pass device='cuda', or use backend='eager' (precision='fp16' for the same "
                               "weight layout on any device)")


def cuda_fp16(
    config: ClipConfig,
    checkpoint: Checkpoint,
    device: str | torch.device = "cuda",
    *,
    compile: bool | str = False,
    channels_last: bool = True,
    trim_text: bool = True,
) -> HalfCLIP:
    """Half-precision (float16) inference on a CUDA device (see the module docstring)."""
    device = torch.device(device)
    _check_device("cuda-fp16", device)
    return build_half(config, checkpoint, device, torch.float16,
                      channels_last=channels_last, trim_text=trim_text, compile=compile)


def cuda_bf16(
    config: ClipConfig,
    checkpoint: Checkpoint,
    device: str | torch.device = "cuda",
    *,
    compile: bool | str = False,
    channels_last: bool = True,
    trim_text: bool = True,
) -> HalfCLIP:
    """bfloat16 inference on a CUDA device (see the module docstring)."""
    device = torch.device(device)
    _check_device("cuda-bf16", device)
    return build_half(config, checkpoint, device, torch.bfloat16,
                      channels_last=channels_last, trim_text=trim_text, compile=compile)


backends.register("cuda-fp16", cuda_fp16, cuda_unavailable,
                  description="float16 weights (fp32 LayerNorm), SDPA attention, channels_last ResNets, "
                              "optional torch.compile, on CUDA")
backends.register("cuda-bf16", cuda_bf16, bf16_unavailable,
                  description="as cuda-fp16 in bfloat16 (GPUs with compute capability 8.0+)")
