"""Load time and peak memory: `clipcore.load` against the reference loaders, each side in a fresh process.

Cases (architecture x file format -> a ready fp32 CPU model):
- fp16 OpenAI-style state dict (`torch.save`): vs OpenAI `clip.load(path, jit=False)`;
- safetensors, fp32: vs `open_clip.create_model_and_transforms(name, pretrained=path)`;
- OpenAI-style TorchScript archive (fp16, traced like the released files): vs OpenAI `clip.load(jit=False)`.
for ViT-B/32, ViT-B/16, ViT-L/14 and RN50 (ViT-B/32 only under --quick). Scaling: clipcore's load time and
memory on generated safetensors files, a tiny config and one of about 2 billion parameters (no reference
there: building it the reference's way takes minutes and twice the memory; the yardstick is the fp32 size).

Targets (issue 5): load >= 10x faster (>= 30x for fp32 safetensors, which loads with no copy), and peak RSS
above the interpreter's baseline <= 1.15x the model's fp32 parameter bytes. The memory figure is taken after
every weight has been touched once (a memory-mapped file is only read then), i.e. a model in use.

The checkpoints are generated once per architecture (random, perturbed weights of OpenAI's own model) in a
temporary folder, and deleted when the next architecture's are made (ViT-L/14 files total about 3.4 GB).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import struct
from pathlib import Path

import pytest
import torch

from benchmarks import harness
from conformance.reference import _OPENAI_ARCHITECTURES, import_openai_clip, perturb, save_formats
from spec import TextConfig, get_model_config, shapes_of

ARCHITECTURES = harness.pick(["ViT-B/32", "ViT-B/16", "ViT-L/14", "RN50"], ["ViT-B/32"])
OPEN_CLIP_NAMES = {"ViT-B/32": "ViT-B-32-quickgelu", "ViT-B/16": "ViT-B-16-quickgelu",
                   "ViT-L/14": "ViT-L-14-quickgelu", "RN50": "RN50-quickgelu"}
# format -> (the reference loader in benchmarks/load_jobs.py, time target)
FORMATS = {"fp16": ("openai_clip", 10.0), "safetensors": ("open_clip", 30.0), "torchscript": ("openai_clip", 10.0)}
CONVERTING = {"fp16", "torchscript"}  # formats whose weights are converted into new fp32 memory
MEMORY_TARGET = 1.15
ROUNDS = 3
MB = 1e6


class CheckpointCache:
    """The files of one architecture at a time (the previous architecture's are deleted to bound disk use)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.name: str | None = None
        self.paths: dict[str, Path] = {}

    def get(self, name: str) -> dict[str, Path]:
        if name != self.name:
            shutil.rmtree(self.folder / "current", ignore_errors=True)
            folder = self.folder / "current"
            folder.mkdir()
            clip = import_openai_clip()
            args = _OPENAI_ARCHITECTURES[name]
            torch.manual_seed(0)
            model = perturb(clip.model.CLIP(*args), seed=1)
            paths = save_formats(model, folder, args[1], args[5], args[6], formats=list(FORMATS))
            del model
            # open_clip chooses its reader by the file name's extension
            paths["safetensors"] = paths["safetensors"].rename(folder / "model.safetensors")
            self.name, self.paths = name, paths
        return self.paths


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    cache = CheckpointCache(tmp_path_factory.mktemp("load_checkpoints"))
    yield cache
    shutil.rmtree(cache.folder, ignore_errors=True)


def side_job(side: str, path: Path, name: str) -> tuple[str, dict]:
    kwargs = {"path": str(path)}
    if side == "open_clip":
        kwargs["model_name"] = OPEN_CLIP_NAMES[name]
    return f"benchmarks.load_jobs:{side}_load", kwargs


CASES = [(name, fmt) for name in ARCHITECTURES for fmt in FORMATS]  # grouped by architecture: one set of files


@pytest.mark.parametrize(("name", "fmt"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_load(benchmark, checkpoints, name, fmt):
    path = checkpoints.get(name)[fmt]
    reference, target = FORMATS[fmt]
    job, kwargs = side_job(reference, path, name)
    mine, theirs = harness.interleave(
        benchmark,
        lambda: harness.child("benchmarks.load_jobs:clipcore_load", path=str(path)),
        lambda: harness.child(job, **kwargs),
        harness.rounds(ROUNDS),
    )
    # the same work: the same number of parameters, all float32
    assert mine[0]["parameters"] == theirs[0]["parameters"], (mine[0], theirs[0])
    assert mine[0]["dtypes"] == theirs[0]["dtypes"] == ["torch.float32"], (mine[0], theirs[0])

    fp32_bytes = 4 * mine[0]["parameters"]
    times = sorted(t["seconds"] / m["seconds"] for m, t in zip(mine, theirs, strict=True))
    best_mine, best_theirs = min(m["seconds"] for m in mine), min(t["seconds"] for t in theirs)
    touched = (min(m["seconds"] + m["touch_seconds"] for m in mine),
               min(t["seconds"] + t["touch_seconds"] for t in theirs))
    note = (f"incl. first touch of every weight {touched[0]:.3g} s vs {touched[1]:.3g} s "
            f"({touched[1] / touched[0]:.1f}x)")
    extra = {"clipcore_runs": mine, "reference_runs": theirs, "file_bytes": path.stat().st_size}
    if fmt in CONVERTING:
        # A converting load must write every fp32 byte into fresh memory: its floor on this machine.
        floor = min(harness.child("benchmarks.load_jobs:fresh_memory", nbytes=fp32_bytes)["seconds"]
                    for _ in range(harness.rounds(2)))
        note += (f"; floor (committing {fp32_bytes / MB:,.0f} MB of fresh memory, nothing else) {floor:.3g} s, "
                 f"so no converting loader can beat {best_theirs / floor:.1f}x here; clipcore takes "
                 f"{best_mine / floor:.2f}x the floor")
        extra["fresh_memory_floor_seconds"] = floor
    harness.record(
        benchmark, f"load {name} {fmt} -> fp32 CPU model: time", best_mine, best_theirs, "s",
        lower_is_better=True, target=target, ratio_range=(times[0], times[-1]), reference_name=reference,
        note=note, extra=extra,
    )
    rss_mine = min(m["peak_rss_touched_bytes"] for m in mine)
    rss_theirs = min(t["peak_rss_touched_bytes"] for t in theirs)
    harness.record(
        None, f"load {name} {fmt}: peak RSS / fp32 size", rss_mine / MB, rss_theirs / MB, "MB",
        ratio=rss_mine / fp32_bytes, target=MEMORY_TARGET, at_most=True, reference_name=reference,
        note=f"fp32 size {fp32_bytes / MB:,.0f} MB; reference {rss_theirs / fp32_bytes:.2f}x",
        extra={"fp32_bytes": fp32_bytes, "peak_rss_during_load_bytes": min(m["peak_rss_bytes"] for m in mine)},
    )


# --- scaling: generated configs up to ~2B parameters, clipcore only ---------------------------------------------


def two_billion_config():
    """ViT-bigG-14's vision tower (1.84B) with ViT-L/14's text tower: about 2.0B parameters."""
    big = get_model_config("ViT-bigG-14")
    return dataclasses.replace(big, embed_dim=1280, text=TextConfig(width=768, heads=12, layers=12))


def tiny_config():
    base = get_model_config("ViT-B-32")
    return dataclasses.replace(base, embed_dim=256, vision=dataclasses.replace(base.vision, width=256, layers=4),
                               text=TextConfig(width=256, heads=4, layers=4))


def write_safetensors(config, path: Path, seed: int = 0) -> int:
    """Stream a config's fp32 weights (random) into a safetensors file, one tensor at a time; its byte size.

    Written by hand (header + raw bytes) so that a multi-GB file never has to sit in memory at once.
    """
    shapes = shapes_of(config)
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 4 * math.prod(shape)
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(1 << 20, generator=generator) * 0.02  # tiled: cheap, and never all zeros
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for shape in shapes.values():
            n = math.prod(shape)
            for start in range(0, n, block.numel()):
                f.write(block[: min(block.numel(), n - start)].numpy().tobytes())
    return path.stat().st_size


SCALES = {"tiny": tiny_config, "2B": two_billion_config}


@pytest.mark.parametrize("size", harness.pick(["tiny", "2B"], ["tiny"]))
def test_load_scaling(benchmark, tmp_path, size):
    config = SCALES[size]()
    path = tmp_path / "model.safetensors"
    file_bytes = write_safetensors(config, path)
    try:
        runs = [benchmark.pedantic(lambda: harness.child("benchmarks.load_jobs:clipcore_load", path=str(path)),
                                   rounds=1, iterations=1)]
        runs += [harness.child("benchmarks.load_jobs:clipcore_load", path=str(path))
                 for _ in range(harness.rounds(2) - 1)]
    finally:
        path.unlink()
    fp32_bytes = 4 * runs[0]["parameters"]
    assert fp32_bytes <= file_bytes
    best = min(runs, key=lambda r: r["seconds"])
    rss = min(r["peak_rss_touched_bytes"] for r in runs)
    billions = runs[0]["parameters"] / 1e9
    harness.record(
        benchmark, f"scaling: load {size} ({billions:.2f}B params) safetensors: peak RSS / fp32 size",
        rss / MB, None, "MB", ratio=rss / fp32_bytes, target=MEMORY_TARGET, at_most=True,
        note=f"clipcore only; load {best['seconds']:.3g} s, +touch {best['touch_seconds']:.3g} s, "
             f"file {file_bytes / 1e9:.2f} GB",
        extra={"runs": runs, "file_bytes": file_bytes},
    )
