"""The `torchscript` backend: TorchScript archives run as TorchScript, other checkpoints compiled to it.

    model, _ = clipcore.load("ViT-B-32.pt", backend="torchscript", trust_archive=True)   # OpenAI's archive
    model, _ = clipcore.load("model.safetensors", backend="torchscript")                 # scripted here
    model, _ = clipcore.load("model.safetensors", backend="torchscript", mode="trace")

- A TorchScript archive (an OpenAI release, or one written by `clipcore.export_torchscript`) is loaded with
  `torch.jit.load`, which runs TorchScript code from the file. That is why it is opt-in: without
  `trust_archive=True` this backend refuses, and points to the eager backend, which reads the same file's
  weights without running anything. The architecture (`model.config`) is still read from the weights by
  clipcore's own reader before `torch.jit.load` is called. The graphs are then retargeted as OpenAI's
  `clip.load(jit=True)` does (backends/jit_patch.py): every device constant to the target device, and on
  the CPU every float16 cast to float32, with the weights converted to float32. On another device the
  archive keeps its own precision (float16 for OpenAI's files), as the reference does.
- Any other checkpoint is built by the eager backend and compiled: `mode="script"` (default:
  `torch.jit.script`, every control path kept) or `mode="trace"` (`torch.jit.trace`, the graph one example
  input takes; the form `export_torchscript` writes).

The result is a `ScriptedCLIP`: the common interface around the TorchScript module (`model.script`, which
`torch.jit.save` can write). torch.jit is deprecated upstream in favour of torch.export/torch.compile; this
backend exists for the archives and tools that still use it, and silences torch's deprecation notice for
the calls it makes on the user's explicit request.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

import backends
from backends.eager import build as build_eager
from backends.jit_patch import PatchReport, patch_module
from backends.model import uint8_to_input
from clipcore.checkpoint import Checkpoint
from clipcore.errors import BackendError
from clipcore.export import trace_model
from clipcore.preprocess import OPENAI_MEAN, OPENAI_STD
from spec import ClipConfig

__all__ = ["MODES", "ScriptedCLIP", "build", "load_archive"]

MODES = ("script", "trace")
EAGER_FIX = ("load it with backend='eager' (the default), which reads the same file's weights without "
             "executing anything, or pass trust_archive=True if you trust the file's author")


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch 2.9+ warns on every torch.jit call that it is deprecated; the caller asked for it here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


class ScriptedCLIP(nn.Module):
    """A TorchScript CLIP (`script`) with the common interface: encode_image/encode_text/forward, config,
    dtype, device. Other attributes (`visual`, `logit_scale`, `input_resolution`, ...) are the script's."""

    def __init__(self, script: torch.jit.ScriptModule, config: ClipConfig, patches: PatchReport | None = None):
        super().__init__()
        self.script = script
        self.config = config
        self.patches = patches  # what jit_patch rewrote (None: nothing was patched, the module was made here)
        self.methods = frozenset(script._c._method_names())

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("script", "_modules"):
                raise
            return getattr(self.script, name)

    def _floating(self) -> torch.Tensor:
        """The first floating-point weight of the image tower (of the model, if it has no `visual`)."""
        floating = [(name, p) for name, p in self.script.named_parameters() if p.is_floating_point()]
        return next((p for name, p in floating if name.startswith("visual.")), floating[0][1])

    @property
    def dtype(self) -> torch.dtype:
        """The image tower's weight dtype (OpenAI's `model.dtype`)."""
        return self._floating().dtype

    @property
    def device(self) -> torch.device:
        return self._floating().device

    def _method(self, name: str):
        if name not in self.methods:
            raise BackendError(f"this TorchScript module has no {name} method (it has {sorted(self.methods)})",
                               fix="load the file with backend='eager', which builds every method from its weights")
        return getattr(self.script, name)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self._method("encode_image")(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self._method("encode_text")(text)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_uint8(self, batch: torch.Tensor, normalize: bool = False,
                           mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD) -> torch.Tensor:
        """`encode_image` for uint8 (N, H, W, 3) batches from `Preprocess.batch(..., output="uint8")`."""
        return self.encode_image(uint8_to_input(batch, self.device, self.dtype, mean, std), normalize)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text): the archive's own forward when it has one."""
        if "forward" in self.methods:
            return self.script(image, text)
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits = self.script.logit_scale.exp() * image_features @ text_features.t()
        bias = getattr(self.script, "logit_bias", None)
        if bias is not None:
            logits = logits + bias
        return logits, logits.t()


def load_archive(config: ClipConfig, checkpoint: Checkpoint, device: torch.device) -> ScriptedCLIP:
    """torch.jit.load the archive onto `device` and patch its graphs there (see the module docstring)."""
    try:
        with quiet_jit():
            script = torch.jit.load(str(checkpoint.path), map_location=device)
    except RuntimeError as e:
        raise BackendError(f"torch.jit.load could not load {checkpoint.path}: {str(e).splitlines()[0]}",
                           fix="load it with backend='eager', which reads its weights with clipcore's reader") from None
    script.eval()
    on_cpu = device.type == "cpu"
    patches = patch_module(script, device, float32=on_cpu)
    if on_cpu:
        script.float()
    return ScriptedCLIP(script, config, patches)


def compile_model(model: nn.Module, mode: str) -> torch.jit.ScriptModule:
    try:
        with quiet_jit(), torch.no_grad():
            return torch.jit.script(model) if mode == "script" else trace_model(model)
    except (RuntimeError, torch.jit.Error) as e:  # e.g. a tower from another library that TorchScript cannot read
        other = "trace" if mode == "script" else "script"
        message = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise BackendError(f"torch.jit.{mode} could not compile this {model.config.vision.kind} model: {message}",
                           fix=f"try mode={other!r}, or backend='eager', which runs the same modules without "
                               "TorchScript") from e


def build(
    config: ClipConfig,
    checkpoint: Checkpoint,
    device: str | torch.device = "cpu",
    *,
    trust_archive: bool = False,
    mode: str = "script",
) -> ScriptedCLIP:
    """A TorchScript CLIP for `checkpoint` on `device` (see the module docstring for the two cases)."""
    device = torch.device(device)
    if mode not in MODES:
        raise BackendError(f"torchscript: unknown mode {mode!r}", fix=f"use one of {list(MODES)}")
    if checkpoint.format == "torchscript":
        if trust_archive is not True:
            raise BackendError(
                f"{checkpoint.path} is a TorchScript archive: running it means torch.jit.load, which executes "
                "the TorchScript code stored in the file",
                fix=EAGER_FIX,
            )
        return load_archive(config, checkpoint, device)
    model = build_eager(config, checkpoint, device)
    return ScriptedCLIP(compile_model(model, mode), config)


backends.register("torchscript", build,
                  description="TorchScript: archives via torch.jit.load with device/dtype graph patching "
                              "(trust_archive=True), other checkpoints scripted or traced")
