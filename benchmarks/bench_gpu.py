"""GPU throughput: clipcore's `cuda-fp16` backend against open_clip in fp16 autocast, on the same GPU, in one run.

For ViT-B/32, ViT-B/16, ViT-L/14 and RN50 (OpenAI's architectures, random perturbed weights saved as one
safetensors file that both sides load): images/s of `encode_image` and texts/s of `encode_text` at batch 256,
and each side's model FLOPs utilisation (MFU) against the GPU's dense fp16 tensor-core peak.

- clipcore: `clipcore.load(path, backend="cuda-fp16")` (float16 weights, SDPA, channels_last ResNets, text
  trimmed to its longest caption), and with `compile=True` in the full run.
- reference: `open_clip.create_model(<name>-quickgelu, pretrained=path, device="cuda")` (float32 weights) run
  under `torch.autocast("cuda", torch.float16)`: open_clip's own mixed-precision inference (`--precision amp`).
- Both sides get the same float32 images (normalised, already on the GPU) and the same token batch, under
  `torch.inference_mode()`; their features are checked to agree first (cosine >= 0.999), so both do the
  same work. Timing: CUDA events around several calls, interleaved rounds, best round of each side.
- FLOPs are counted per side with `torch.utils.flop_counter.FlopCounterMode` on one real batch (matmuls,
  convolutions, attention), so MFU = counted FLOPs x items/s / peak. For text, clipcore's count covers the
  trimmed positions it actually computes, the reference's all 77; texts/s is the like-for-like figure.
- Peak: the table below by device name (dense fp16, no sparsity), or CLIPCORE_GPU_PEAK_TFLOPS to set it.

The whole module is skipped without CUDA. Target: >= 1.3x the reference's images/s on ViT-B/16 and ViT-L/14.
"""

from __future__ import annotations

import os
import shutil

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import clipcore
from benchmarks import harness
from conformance.reference import _OPENAI_ARCHITECTURES, import_openai_clip, perturb, save_formats

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="GPU throughput needs a CUDA device (torch.cuda.is_available() is False)")

ARCHITECTURES = harness.pick(["ViT-B/32", "ViT-B/16", "ViT-L/14", "RN50"], ["ViT-B/32"])
OPEN_CLIP_NAMES = {"ViT-B/32": "ViT-B-32-quickgelu", "ViT-B/16": "ViT-B-16-quickgelu",
                   "ViT-L/14": "ViT-L-14-quickgelu", "RN50": "RN50-quickgelu"}
COMPILE = harness.pick([False, True], [False])
BATCH = 256
TARGETS = {("image", "ViT-B/16"): 1.3, ("image", "ViT-L/14"): 1.3}
CALLS_PER_ROUND = 2 if harness.quick() else 10
ROUNDS = 5
CAPTIONS = ["a photo of a cat", "a diagram of two dogs playing in the snow next to a red car",
            "an aerial view of a harbour at night with many small boats moored along a long wooden pier",
            "A bowl of soup.", "a close-up photograph of a bee on a sunflower", "the number seven"]

# Dense (no sparsity) fp16 tensor-core peak in TFLOP/s, by a substring of torch.cuda.get_device_name();
# the first match wins, so the specific names come first. From the vendors' data sheets.
PEAK_TFLOPS_FP16 = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989.4),  # H200 SXM, GH200
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10G", 70.0),  # AWS's A10G: 70 dense fp16 (A10: 125)
    ("A10", 125.0),
    ("RTX 4090", 165.2),  # GeForce: fp16 with fp32 accumulation
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def peak_flops() -> float | None:
    """The GPU's dense fp16 peak in FLOP/s, or None when it is not known."""
    override = os.environ.get("CLIPCORE_GPU_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS_FP16 if key in name), None)


class Models:
    """One architecture at a time: the checkpoint, open_clip's model and clipcore's (plain and compiled)."""

    def __init__(self, folder):
        self.folder = folder
        self.name = None
        self.models: dict[str, torch.nn.Module] = {}

    def get(self, name: str, compile: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        if name != self.name:
            self.models.clear()
            torch.cuda.empty_cache()
            shutil.rmtree(self.folder / "current", ignore_errors=True)
            folder = self.folder / "current"
            folder.mkdir()
            args = _OPENAI_ARCHITECTURES[name]
            torch.manual_seed(0)
            model = perturb(import_openai_clip().model.CLIP(*args), seed=1)
            path = save_formats(model, folder, args[1], args[5], args[6], formats=["safetensors"])["safetensors"]
            self.path = path.rename(folder / "model.safetensors")  # open_clip picks its reader by extension
            del model
            reference = open_clip.create_model(OPEN_CLIP_NAMES[name], pretrained=str(self.path), device="cuda")
            self.models["reference"] = reference.eval()
            self.name = name
        key = f"clipcore-compile={compile}"
        if key not in self.models:
            self.models[key] = clipcore.load(self.path, device="cuda", backend="cuda-fp16", compile=compile)[0]
        return self.models[key], self.models["reference"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = Models(tmp_path_factory.mktemp("gpu"))
    yield cache
    cache.models.clear()
    shutil.rmtree(cache.folder, ignore_errors=True)


def inputs(name: str, what: str) -> torch.Tensor:
    if what == "image":
        size = _OPENAI_ARCHITECTURES[name][1]
        return torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0)).cuda()
    return clipcore.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(BATCH)]).cuda()


def encoder(model: torch.nn.Module, method: str, x: torch.Tensor, autocast: bool):
    encode = getattr(model, method)

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=autocast):
            return encode(x)

    return run


def gpu_seconds(fn, calls: int):
    """A callable timing `calls` calls of `fn` with CUDA events: seconds per call."""

    def run() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000 / calls

    return run


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


CASES = [(n, w, c) for n in ARCHITECTURES for w in ("image", "text") for c in COMPILE]


@pytest.mark.parametrize(("name", "what", "compile"), CASES,
                         ids=[f"{n}-{w}-{'compiled' if c else 'eager'}" for n, w, c in CASES])
def test_gpu_throughput(benchmark, models, name, what, compile):
    ours, reference = models.get(name, compile)
    x = inputs(name, what)
    method = f"encode_{what}"
    run_ours, run_ref = encoder(ours, method, x, autocast=False), encoder(reference, method, x, autocast=True)
    agreement = F.cosine_similarity(run_ours().float(), run_ref().float(), dim=-1).min().item()
    assert agreement >= 0.999, f"clipcore and open_clip disagree (min cosine {agreement})"  # the same work
    for _ in range(3):  # warm-up: cuDNN autotuning, compilation, allocator
        run_ours(), run_ref()
    mine, theirs = harness.interleave(benchmark, gpu_seconds(run_ours, CALLS_PER_ROUND),
                                      gpu_seconds(run_ref, CALLS_PER_ROUND), harness.rounds(ROUNDS))
    rate_ours, rate_ref = BATCH / min(mine), BATCH / min(theirs)
    plain = models.get(name, compile=False)[0]  # counted uncompiled: the same operations, seen one by one
    flops_ours = counted_flops(encoder(plain, method, x, autocast=False)) / BATCH
    flops_ref = counted_flops(run_ref) / BATCH
    peak = peak_flops()
    mfu = {"mfu": None, "mfu_reference": None} if peak is None else {
        "mfu": flops_ours * rate_ours / peak, "mfu_reference": flops_ref * rate_ref / peak}
    paired = sorted(t / m for m, t in zip(mine, theirs, strict=True))
    note = "MFU " + (f"{mfu['mfu']:.1%} (reference {mfu['mfu_reference']:.1%}) of "
                     f"{peak / 1e12:g} TFLOP/s dense fp16" if peak else "unknown: set CLIPCORE_GPU_PEAK_TFLOPS")
    if what == "text":
        note += "; clipcore trims the batch to its longest caption"
    harness.record(
        benchmark, f"GPU encode_{what} {name} cuda-fp16{' compiled' if compile else ''}, batch {BATCH}",
        rate_ours, rate_ref, f"{what}s/s", target=TARGETS.get((what, name)), ratio_range=(paired[0], paired[-1]),
        reference_name="open_clip fp16 autocast", note=note, gpu=True,
        extra={"batch": BATCH, "compile": compile, "gflops_per_item": flops_ours / 1e9,
               "gflops_per_item_reference": flops_ref / 1e9, "peak_tflops": peak / 1e12 if peak else None,
               "min_cosine": agreement, **mfu},
    )
