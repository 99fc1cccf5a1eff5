"""CPU encode throughput: clipcore's eager and torchscript backends against the reference model, fp32.

The reference builds the model (OpenAI's own CLIP class, random perturbed weights), saves it as safetensors,
and both sides load that file: clipcore through `clipcore.load(path, backend=...)`, the reference through
`open_clip.create_model_and_transforms(name, pretrained=path)`. Same images and captions, same thread count,
`torch.inference_mode()` on both sides, interleaved rounds, best of each. Outputs are checked to agree
first, so both sides do the same work.

Threads: one by default (CLIPCORE_BENCH_THREADS=n to change). On a shared machine OpenMP thread teams that
compete with other processes make multi-threaded timings erratic (2-10x swings between rounds on the
2-core development VM), while a ratio at one thread is stable; the thread count is in every record.

Cases: encode_image (images/s) and encode_text (texts/s) at batch 1 and 16, for the eager and torchscript
backends, plus batch 64 (eager) as the throughput-vs-batch-size point, for ViT-B/32 and RN50 (ViT-B/32 at
batch 1 under --quick). Target >= 1.0x.
"""

from __future__ import annotations

import os
import shutil

import open_clip
import pytest
import torch

import clipcore
from benchmarks import harness
from conformance.reference import _OPENAI_ARCHITECTURES, import_openai_clip, perturb, save_formats

ARCHITECTURES = harness.pick(["ViT-B/32", "RN50"], ["ViT-B/32"])
OPEN_CLIP_NAMES = {"ViT-B/32": "ViT-B-32-quickgelu", "RN50": "RN50-quickgelu"}
BATCHES = harness.pick([1, 16], [1])
SCALING_BATCHES = harness.pick([64], [])  # eager only: throughput vs batch size
THREADS = int(os.environ.get("CLIPCORE_BENCH_THREADS", "1"))
ROUNDS = 3
# torchscript in "trace" mode: the form OpenAI's archives and clipcore.export_torchscript have
BACKENDS = {"eager": {}, "torchscript": {"mode": "trace"}}
TARGET = 1.0
CAPTIONS = ["a photo of a cat", "a diagram of two dogs playing in the snow next to a red car",
            "an aerial view of a harbour at night with many small boats", "A bowl of soup."]


class Models:
    """One architecture at a time: its file, the reference model, and clipcore's model per backend (loaded on
    first use, so that one backend failing to load fails its own cases only)."""

    def __init__(self, folder):
        self.folder = folder
        self.name = None
        self.path = None
        self.models: dict[str, torch.nn.Module] = {}

    def get(self, name: str, backend: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(clipcore's model on `backend`, the reference model) for architecture `name`."""
        if name != self.name:
            self.models.clear()
            shutil.rmtree(self.folder / "current", ignore_errors=True)
            folder = self.folder / "current"
            folder.mkdir()
            args = _OPENAI_ARCHITECTURES[name]
            torch.manual_seed(0)
            model = perturb(import_openai_clip().model.CLIP(*args), seed=1)
            path = save_formats(model, folder, args[1], args[5], args[6], formats=["safetensors"])["safetensors"]
            self.path = path.rename(folder / "model.safetensors")  # open_clip picks its reader by extension
            del model
            reference, _, _ = open_clip.create_model_and_transforms(OPEN_CLIP_NAMES[name],
                                                                    pretrained=str(self.path), device="cpu")
            self.models["reference"] = reference.eval()
            self.name = name
        if backend not in self.models:
            self.models[backend] = clipcore.load(self.path, device="cpu", backend=backend, **BACKENDS[backend])[0]
        return self.models[backend], self.models["reference"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = Models(tmp_path_factory.mktemp("encode"))
    yield cache
    cache.models.clear()
    shutil.rmtree(cache.folder, ignore_errors=True)


def inputs(name: str, what: str, batch: int) -> torch.Tensor:
    if what == "image":
        size = _OPENAI_ARCHITECTURES[name][1]
        return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
    return clipcore.tokenize([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])


CASES = [(n, b, w, k) for n in ARCHITECTURES for b in BACKENDS for w in ("image", "text") for k in BATCHES]
CASES += [(n, "eager", w, k) for n in ARCHITECTURES for w in ("image", "text") for k in SCALING_BATCHES]
CASES.sort(key=lambda case: ARCHITECTURES.index(case[0]))  # grouped by architecture: one model set at a time


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("name", "backend", "what", "batch"), CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_encode(benchmark, models, name, backend, what, batch):
    ours, reference = models.get(name, backend)
    x = inputs(name, what, batch)
    method = f"encode_{what}"
    with torch.inference_mode():
        expected = getattr(reference, method)(x)
        got = getattr(ours, method)(x)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)  # the same work

        def run(model):
            encode = getattr(model, method)
            return lambda: encode(x)

        harness.throughput(benchmark, f"CPU encode_{what} {name} {backend} fp32, batch {batch}",
                           run(ours), run(reference), items=batch, unit=f"{what}s/s", target=TARGET,
                           n_rounds=ROUNDS, reference_name="open_clip")
