"""The `clipcore` command line: try the bundled model, classify and embed images, inspect and convert checkpoints.

    clipcore demo                                        # the bundled model on fresh pictures, a PNG grid
    clipcore classify cat.jpg dog.png --labels "a cat,a dog"
    clipcore embed photos/ --out photos.npy              # resumable: run it again after an interruption
    clipcore inspect model.pt                            # format, architecture, SHA-256, safety
    clipcore convert model.pt model.safetensors          # pickle / TorchScript -> safetensors, nothing executed
    clipcore download ViT-B/32

Exit status: 0 done, 1 the command failed (the message says why and what to do), 2 bad arguments, 130
interrupted. `--json` prints one JSON object on stdout for scripts. Standard library only (plus clipcore).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clipcore.errors import ClipcoreError, DataError

__all__ = ["main"]

log = logging.getLogger("clipcore")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
EMBED_SUFFIXES = (".npy", ".safetensors")


class UsageError(Exception):
    """Arguments that parse but make no sense together: reported like argparse's own errors (exit 2)."""


# --- small helpers -------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path next to `path`; renamed onto `path` when the block succeeds, removed when it fails, so
    `path` is always either its old content or the complete new one (an interrupt never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_json(path: Path, value: Any) -> None:
    with _atomic(path) as temp:
        temp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _load(name: str, device: str | None, backend: str, trust_archive: bool = False) -> tuple[Any, Any]:
    import clipcore

    options = {"trust_archive": True} if trust_archive else {}
    return clipcore.load(name, device=device, backend=backend, **options)


def _labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise UsageError(f'--labels {text!r} names no labels: pass them comma-separated, e.g. --labels "a dog,a cat"')
    if len(set(labels)) != len(labels):
        raise UsageError(f"--labels {text!r} names a label twice")
    return labels


class _CountBar:
    """`embed  1234/5000  25%  41.3 img/s  ETA 01:31` on stderr, redrawn at most ten times a second; drawn only
    when stderr is a terminal, so logs and piped runs stay clean."""

    def __init__(self, total: int, done: int = 0, desc: str = "embed", enabled: bool = True) -> None:
        self.total, self.done, self.desc = total, done, desc
        self.enabled = enabled and getattr(sys.stderr, "isatty", lambda: False)()
        self._start, self._start_done, self._drawn = time.monotonic(), done, 0.0

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled and time.monotonic() - self._drawn >= 0.1:
            self._draw()

    def _draw(self) -> None:
        now = time.monotonic()
        self._drawn = now
        rate = (self.done - self._start_done) / max(now - self._start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else math.nan
        eta = "--:--" if math.isnan(left) else f"{int(left) // 60:02d}:{int(left) % 60:02d}"
        percent = 100 * self.done / max(self.total, 1)
        sys.stderr.write(f"\r{self.desc}  {self.done}/{self.total}  {percent:3.0f}%  {rate:.1f} img/s  ETA {eta}\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")


# --- clipcore demo ---------------------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    from clipcore import demo, synthetic

    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    model, preprocess = _load(demo.NAME, args.device, "eager")
    pictures = synthetic.scenes(seed, args.count)
    images = [synthetic.render(scene, preprocess.size[0]) for scene in pictures]
    found = demo.predict(model, preprocess, images, synthetic.class_names(), demo.TEMPLATES)
    rows = [{"picture": scene.description, "truth": scene.label, "top": found.top(i, 3),
             "right": found.top(i, 1)[0][0] == scene.label} for i, scene in enumerate(pictures)]
    out = Path(args.out)
    with _atomic(out) as temp:
        demo_grid(images, rows).save(temp, format="PNG")
    right = sum(row["right"] for row in rows)
    if args.json:
        _print_json({"model": demo.NAME, "seed": seed, "right": right, "count": len(rows), "png": str(out),
                     "results": [{**row, "top": [{"label": lab, "p": round(p, 4)} for lab, p in row["top"]]}
                                 for row in rows]})
        return 0
    width = max(len(row["picture"]) for row in rows)
    print(f"{'#':>2}  {'picture (generated, seed ' + str(seed) + ')':<{width}}  {'best label':<16} {'p':>5}  right")
    for i, row in enumerate(rows, 1):
        label, p = row["top"][0]
        print(f"{i:>2}  {row['picture']:<{width}}  {label:<16} {p:5.2f}  {'yes' if row['right'] else 'NO'}")
    held_out = demo.provenance().get("held_out", {}).get("top1")
    print(f"{right}/{len(rows)} right among {len(synthetic.class_names())} colour-and-shape labels"
          + (f" (held-out top-1 of this model: {held_out:.1%})" if isinstance(held_out, float) else ""))
    print(f"wrote {out}")
    return 0


def demo_grid(images: Sequence[Any], rows: Sequence[dict[str, Any]], columns: int = 4, scale: int = 3) -> Any:
    """A PNG-ready grid: each picture enlarged, its true label, and the top labels with probability bars."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=13)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    side = images[0].width * scale
    line, pad = 17, 10
    cell_w, cell_h = max(side, 190) + 2 * pad, side + 2 * pad + line * (1 + len(rows[0]["top"]))
    columns = min(columns, len(images))
    grid = Image.new("RGB", (cell_w * columns, cell_h * math.ceil(len(images) / columns)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (image, row) in enumerate(zip(images, rows, strict=True)):
        x, y = (i % columns) * cell_w + pad, (i // columns) * cell_h + pad
        grid.paste(image.resize((side, side), Image.Resampling.NEAREST), (x + (cell_w - 2 * pad - side) // 2, y))
        y += side + 4
        draw.text((x, y), f"truth: {row['truth']}", fill=(60, 60, 60), font=font)
        for label, p in row["top"]:
            y += line
            bar = int((cell_w - 2 * pad) * p)
            colour = (170, 220, 170) if label == row["truth"] else (235, 190, 190)
            draw.rectangle((x, y + 1, x + bar, y + line - 2), fill=colour)
            draw.text((x + 3, y + 1), f"{p:4.0%}  {label}", fill="black", font=font)
    return grid


# --- clipcore classify -----------------------------------------------------------------------------------------


def run_classify(args: argparse.Namespace) -> int:
    from clipcore import demo

    labels = _labels(args.labels)
    if args.top < 1 or args.batch_size < 1:
        raise UsageError(f"--top and --batch-size must be at least 1, got {args.top} and {args.batch_size}")
    for template in args.template or ():
        if template.count("{}") != 1:
            raise UsageError(f"--template {template!r} must contain {{}} exactly once, e.g. 'a photo of {{}}'")
    model, preprocess = _load(args.model, args.device, args.backend, args.trust_archive)
    found = demo.predict(model, preprocess, args.images, labels, args.template or ("{}",), args.batch_size)
    k = min(args.top, len(labels))
    results = [{"image": image, "top": [{"label": lab, "p": round(p, 6)} for lab, p in found.top(i, k)]}
               for i, image in enumerate(args.images)]
    if args.json:
        _print_json({"model": args.model, "labels": labels, "results": results})
        return 0
    for result in results:
        print(result["image"])
        for entry in result["top"]:
            print(f"  {entry['p']:6.1%}  {entry['label']}")
    return 0


# --- clipcore embed --------------------------------------------------------------------------------------------


def collect_images(inputs: Sequence[str]) -> list[str]:
    """The image paths named by `inputs`: folders (searched recursively for image suffixes, sorted), list files
    (.txt: one path a line, relative to the list's folder, '#' comments) and image files, in order, each once."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
            for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                text = text.strip()
                if not text or text.startswith("#"):
                    continue
                entry = Path(text).expanduser()
                entry = entry if entry.is_absolute() else path.parent / entry
                if not entry.is_file():
                    raise DataError(f"{path}, line {number}: {entry} is not a file",
                                    fix="fix or remove the line (relative paths are relative to the list's folder)")
                found.append(str(entry))
        elif path.is_file():
            found.append(str(path))
        else:
            raise DataError(f"{item} is neither a folder, a list of paths (.txt) nor an image file",
                            fix="pass a folder of images, a .txt file with one image path a line, or image files")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no images found in {', '.join(inputs)}",
                        fix=f"images are found by their suffix: {', '.join(IMAGE_SUFFIXES)}")
    return unique


def embed_batch(model: Any, preprocess: Any, paths: Sequence[str], normalize: bool) -> Any:
    """Float32 (len(paths), embed_dim) image features of one batch of files."""
    import torch

    with torch.no_grad():
        pixels = preprocess.batch(paths).to(_device_of(model))
        return model.encode_image(pixels, normalize=normalize).float().cpu().numpy()


def _device_of(model: Any) -> Any:
    device = getattr(model, "device", None)
    return device if device is not None else next(model.parameters()).device


def _read_rows(path: Path) -> tuple[Any, dict[str, str]] | None:
    """(float32 rows, string metadata) of an embeddings file written by `_write_rows`; None for a .npy whose
    sidecar describes other rows (a run stopped between writing the two)."""
    import numpy as np
    from safetensors import safe_open

    try:
        if path.suffix == ".npy":
            sidecar = _sidecar(path)
            metadata = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
            if not isinstance(metadata, dict) or metadata.get("embeddings_sha256") != _sha256(path):
                return None
            return np.load(path, allow_pickle=False), metadata
        with safe_open(str(path), "np") as f:
            return f.get_tensor("embeddings"), dict(f.metadata() or {})
    except Exception as e:  # whatever the file is, it is not embeddings this command wrote
        raise DataError(f"{path} exists but is not an embeddings file written by clipcore embed ({e})",
                        fix="choose another --out, or delete the file") from None


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _write_rows(path: Path, rows: Any, metadata: dict[str, str]) -> None:
    """Embeddings to .npy (plus a JSON sidecar with the metadata and the .npy's SHA-256) or .safetensors
    (metadata in the header). Each file is replaced atomically."""
    import numpy as np

    with _atomic(path) as temp:
        if path.suffix == ".npy":
            with open(temp, "wb") as f:
                np.save(f, rows)
            metadata = {**metadata, "embeddings_sha256": _sha256(temp)}
        else:
            _save_safetensors(temp, "embeddings", np.ascontiguousarray(rows, dtype=np.float32), metadata)
    if path.suffix == ".npy":
        _write_json(_sidecar(path), metadata)


def _save_safetensors(path: Path, name: str, array: Any, metadata: dict[str, str]) -> None:
    """One float32 array as a safetensors file, byte for byte the same for the same input (the safetensors
    library writes its metadata in a random order, so two runs would differ)."""
    header = {"__metadata__": dict(sorted(metadata.items())),
              name: {"dtype": "F32", "shape": list(array.shape), "data_offsets": [0, array.nbytes]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.write(array.astype("<f4", copy=False).tobytes())


def _identity(args: argparse.Namespace, model_file: Path) -> dict[str, str]:
    """What decides the embeddings besides the images: rows made under another identity are not reused."""
    sha = _sha256(model_file) if model_file.is_file() else str(model_file.resolve())
    return {"model": str(args.model), "model_sha256": sha, "normalized": str(not args.no_normalize).lower()}


def _reusable(rows: Any, metadata: dict[str, str], identity: dict[str, str], where: Path) -> dict[str, Any]:
    """{image path: row} from an earlier file, after checking it was made the same way."""
    differs = [key for key, value in identity.items() if metadata.get(key) != value]
    if differs:
        raise DataError(f"{where} was embedded with {', '.join(f'{k}={metadata.get(k)!r}' for k in differs)}, "
                        f"not {', '.join(f'{k}={identity[k]!r}' for k in differs)}",
                        fix=f"use the same --model and normalisation, or delete {where} to start over")
    paths = json.loads(metadata.get("paths", "[]"))
    if len(paths) != len(rows):
        raise DataError(f"{where} holds {len(rows)} rows for {len(paths)} paths",
                        fix=f"delete {where} to embed those images again")
    return dict(zip(paths, rows, strict=True))


def run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from clipcore.download import resolve

    out = Path(args.out)
    if out.suffix not in EMBED_SUFFIXES:
        raise UsageError(f"--out {out} must end in {' or '.join(EMBED_SUFFIXES)}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths = collect_images(args.inputs)
    identity = _identity(args, resolve(args.model))
    # Rows already made: the finished file of an earlier run, then the parts of an interrupted one.
    parts = out.with_name(out.name + ".parts")
    done: dict[str, Any] = {}
    finished: list[str] = []
    earlier = _read_rows(out) if out.exists() else None
    if earlier is not None:
        done.update(_reusable(*earlier, identity, out))
        finished = list(done)
    elif out.exists():
        log.warning("%s does not match %s (an interrupted run?): its images are embedded again", out, _sidecar(out))
    part_files = sorted(parts.glob("part-*.safetensors")) if parts.is_dir() else []
    for part in part_files:
        done.update(_reusable(*_read_rows(part), identity, part))  # parts are safetensors: never None
    todo = [p for p in paths if p not in done]
    reused = len(paths) - len(todo)
    if todo:
        model, preprocess = _load(args.model, args.device, args.backend, args.trust_archive)
        bar = _CountBar(len(paths), reused, enabled=not args.quiet)
        try:
            for first in range(0, len(todo), args.batch_size):
                batch = todo[first : first + args.batch_size]
                rows = embed_batch(model, preprocess, batch, not args.no_normalize)
                # Each batch is kept at once, atomically: an interrupt loses at most the batch in flight.
                parts.mkdir(parents=True, exist_ok=True)
                part_files.append(parts / f"part-{len(part_files):06d}.safetensors")
                _write_rows(part_files[-1], rows, {**identity, "paths": json.dumps(batch)})
                done.update(zip(batch, rows, strict=True))
                bar.update(len(batch))
        finally:
            bar.close()
    matrix = np.stack([np.asarray(done[p], dtype=np.float32) for p in paths])
    if todo or part_files or finished != paths:
        _write_rows(out, matrix, {**identity, "paths": json.dumps(paths)})
    if parts.is_dir():  # the parts, and the temporary file of a write a hard kill cut short
        for leftover in [*parts.glob("part-*.safetensors"), *parts.glob(".part-*.tmp")]:
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else is in there, leave it
            parts.rmdir()
    summary = {"out": str(out), "images": len(paths), "embedded": len(todo), "reused": reused,
               "dim": int(matrix.shape[1]), "model": str(args.model)}
    if out.suffix == ".npy":
        summary["paths"] = str(_sidecar(out))
    if args.json:
        _print_json(summary)
    else:
        print(f"{out}: {len(paths)} x {matrix.shape[1]} float32 ({len(todo)} embedded now, {reused} reused)"
              + (f"; image paths in {_sidecar(out)}" if out.suffix == ".npy" else "; image paths in its header"))
    return 0


# --- clipcore inspect ------------------------------------------------------------------------------------------

# Per format: (holds a pickle, holds code, what that means for opening it).
SAFETY = {
    "safetensors": (False, False, "pure data (a JSON header and raw tensors): nothing in it can run"),
    "torch-zip": (True, False, "a pickle: clipcore reads it with a restricted unpickler that only rebuilds tensors "
                               "and plain containers, so no code runs; torch.load(weights_only=False) or pickle.load "
                               "would run any code a malicious file holds"),
    "torch-legacy": (True, False, "a legacy (non-zip) pickle: clipcore reads it with a restricted unpickler, so no "
                                  "code runs; torch.load(weights_only=False) would run any code it holds"),
    "torchscript": (True, True, "a TorchScript archive: it contains code (the model's compiled graphs); clipcore "
                                "reads its weights without loading or running that code; torch.jit.load, or "
                                "clipcore's backend='torchscript', compiles and runs it: only for archives you trust"),
}


def _model_file(target: str) -> Path:
    """A bundled model name or an existing path (inspect and convert never download)."""
    from clipcore.download import local_model

    bundled = local_model(target)
    if bundled is not None:
        return bundled
    path = Path(target).expanduser()
    if not path.exists():
        from clipcore.errors import CheckpointError

        raise CheckpointError(f"{target} does not exist", fix="pass the path of a checkpoint file or model folder")
    return path


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _plain_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The file's scalar metadata, a safetensors header's entries included (the long config aside)."""
    out = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}
    header = metadata.get("safetensors")
    if isinstance(header, dict):
        out.update({k: v for k, v in header.items() if k != "open_clip_config"})
    return out


def describe(target: str) -> dict[str, Any]:
    """What `clipcore inspect` reports about a checkpoint, as a JSON-ready dict."""
    from collections import Counter

    from clipcore import provenance
    from clipcore.checkpoint import open_checkpoint
    from spec import infer_config

    path = _model_file(target)
    files = [path] if path.is_file() else None
    with open_checkpoint(path) as checkpoint:
        shapes, dtypes = checkpoint.shapes(), checkpoint.dtypes()
        metadata = checkpoint.metadata
        fmt = checkpoint.format
        if files is None:
            files = [path / name for name in metadata.get("files", [])]
        try:
            known, source = provenance.facts(metadata, shapes, None)
            config, problem = infer_config(shapes, **provenance.merge_overrides(known, {})), None
        except ClipcoreError as e:
            config, source, problem = None, None, str(e)
    pickled, code, meaning = SAFETY[fmt]
    counts = Counter(str(dtype).removeprefix("torch.") for dtype in dtypes.values())
    report: dict[str, Any] = {
        "path": str(path),
        "format": fmt,
        "files": [{"name": f.name, "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files],
        "safety": {"opens_without_running_code": True, "contains_pickle": pickled, "contains_code": code,
                   "note": meaning},
        "tensors": len(shapes),
        "parameters": sum(math.prod(s) for key, s in shapes.items() if dtypes[key].is_floating_point),
        "dtypes": dict(counts.most_common()),
        "metadata": _plain_metadata(metadata),
    }
    if config is None:
        report["architecture"] = None
        report["architecture_error"] = problem
        return report
    v, t = config.vision, config.text
    tower = (f"ViT width {v.width}, {v.layers} layers, patch {v.patch_size}, heads of {v.head_width}"
             if v.kind == "vit" else f"ModifiedResNet layers {list(v.layers)}, width {v.width}")
    report["architecture"] = {
        "summary": f"{tower} at {v.image_size}px; text width {t.width}, {t.layers} layers, {t.heads} heads, "
                   f"context {t.context_length}, vocab {t.vocab_size}; embed {config.embed_dim}; "
                   f"{'QuickGELU' if config.quick_gelu else 'GELU'}",
        "facts_from": source,
        "assumed": {name: _get(config, name) for name in config.assumed},
        "open_clip_config": config.to_openclip(),
    }
    return report


def run_inspect(args: argparse.Namespace) -> int:
    report = describe(args.checkpoint)
    if args.json:
        _print_json(report)
        return 0
    print(f"path          {report['path']}")
    print(f"format        {report['format']}")
    for f in report["files"]:
        print(f"file          {f['name']}  {f['bytes']:,} bytes  sha256 {f['sha256']}")
    safety = report["safety"]
    print(f"safe to open  yes with clipcore (nothing is executed); {safety['note']}")
    print(f"tensors       {report['tensors']}, {report['parameters']:,} parameters")
    print(f"dtypes        {', '.join(f'{k} ({n})' for k, n in report['dtypes'].items())}")
    arch = report["architecture"]
    if arch is None:
        print(f"architecture  not a CLIP model clipcore can build: {report['architecture_error']}")
        return 0
    print(f"architecture  {arch['summary']}")
    print(f"facts from    {arch['facts_from'] or 'the tensor shapes only'}")
    assumed = ", ".join(f"{k}={v!r}" for k, v in arch["assumed"].items())
    print(f"assumed       {assumed or 'nothing (every hyperparameter is known)'}")
    for key, value in report["metadata"].items():
        print(f"metadata      {key} = {value!r}")
    return 0


# --- clipcore convert ------------------------------------------------------------------------------------------

DTYPES = {"keep": None, "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def convert(source: str, out: Path, dtype: str = "keep") -> dict[str, Any]:
    """Rewrite a checkpoint (any format clipcore reads) as safetensors, without executing anything in it. The
    config (what the shapes give, plus the file's facts and the defaults assumed) goes in the header as
    `open_clip_config`, so the new file loads as exactly the same model."""
    import safetensors.torch
    import torch

    from clipcore import provenance
    from clipcore.checkpoint import open_checkpoint
    from spec import infer_config

    path = _model_file(source)
    wanted = getattr(torch, DTYPES[dtype]) if DTYPES[dtype] else None
    with open_checkpoint(path) as checkpoint:
        shapes = checkpoint.shapes()
        known, _ = provenance.facts(checkpoint.metadata, shapes, None)
        config = infer_config(shapes, **provenance.merge_overrides(known, {}))
        tensors = {key: checkpoint.get(key, wanted).contiguous() for key in checkpoint}
        fmt = checkpoint.format
    header = {
        "format": "pt",
        "open_clip_config": json.dumps({"model_cfg": config.to_openclip()}, sort_keys=True),
        "clipcore_converted_from": f"{path.name} ({fmt})",
    }
    if config.assumed:
        header["clipcore_assumed"] = json.dumps(list(config.assumed))
    with _atomic(out) as temp:
        safetensors.torch.save_file(tensors, str(temp), metadata=header)
    return {"in": str(path), "in_format": fmt, "out": str(out), "tensors": len(tensors), "bytes": out.stat().st_size,
            "sha256": _sha256(out), "assumed": list(config.assumed)}


def run_convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"OUT {out} must end in .safetensors")
    if out.exists() and not args.force:
        raise DataError(f"{out} already exists", fix="pass --force to replace it, or choose another name")
    source = Path(args.input)
    if source.exists() and out.exists() and source.resolve() == out.resolve():
        raise UsageError("IN and OUT are the same file")
    result = convert(args.input, out, args.dtype)
    if args.json:
        _print_json(result)
        return 0
    print(f"wrote {out} ({result['tensors']} tensors, {result['bytes']:,} bytes, sha256 {result['sha256']}) "
          f"from {result['in_format']} {result['in']}; nothing in the source was executed")
    if result["assumed"]:
        print(f"note: the source did not say {', '.join(result['assumed'])}; the defaults assumed are recorded in "
              "the new file's header (check them with `clipcore inspect`)")
    return 0


# --- clipcore download -----------------------------------------------------------------------------------------


def run_download(args: argparse.Namespace) -> int:
    from clipcore.download import download

    path = Path(download(args.name, root=args.root, sha256=args.sha256, progress=not (args.quiet or args.json),
                         offline=True if args.offline else None))
    result = {"name": args.name, "path": str(path), "bytes": path.stat().st_size}
    if args.json:
        _print_json({**result, "sha256": _sha256(path)})
    else:
        print(path)
    return 0


# --- the parser --------------------------------------------------------------------------------------------------

# name -> (one-line help, examples for the epilog, argument adder, runner)
Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="demo", help="model name, URL or checkpoint path (default: %(default)s, "
                                                   "the bundled demo model)")
    p.add_argument("--backend", default="eager", help="how the model runs: eager, torchscript, cuda-fp16, "
                                                      "cuda-bf16 (default: %(default)s)")
    p.add_argument("--trust-archive", action="store_true",
                   help="with --backend torchscript: run the code of a TorchScript archive (only for files whose "
                        "author you trust; the default eager backend reads their weights without it)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="clipcore-demo.png", help="the PNG grid to write (default: %(default)s)")
    p.add_argument("--count", type=int, default=8, choices=range(1, 65), metavar="N",
                   help="pictures to generate, 1-64 (default: %(default)s)")
    p.add_argument("--seed", type=int, help="seed of the pictures (default: a new one each run, printed)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "a dog,a cat"')
    p.add_argument("--template", action="append", help="prompt template with {} for the label, e.g. "
                                                       "'a photo of {}' (repeat to average several; default: {})")
    p.add_argument("--top", type=int, default=5, help="labels to show per image (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: %(default)s)")
    _model_options(p)


def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="DIR_OR_LIST",
                   help="folders (searched recursively), .txt lists of paths, or image files")
    p.add_argument("--out", required=True, help="embeddings file: .npy (image paths in FILE.json) or .safetensors")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--no-normalize", action="store_true", help="keep the raw features (default: unit length)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_options(p)


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file or model folder (or 'demo')")


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="a checkpoint in any format clipcore reads (or 'demo')")
    p.add_argument("out", metavar="OUT.safetensors", help="the safetensors file to write")
    p.add_argument("--dtype", choices=list(DTYPES), default="keep",
                   help="floating-point dtype of the output (default: %(default)s, as stored)")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")


def _download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="a released model name (clipcore.available_models()), 'demo', or a URL")
    p.add_argument("--root", help="cache folder (default: $CLIPCORE_CACHE, else ~/.cache/clip)")
    p.add_argument("--sha256", help="expected SHA-256 of a URL's file")
    p.add_argument("--offline", action="store_true", help="never use the network (as CLIPCORE_OFFLINE=1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


COMMANDS: dict[str, Command] = {
    "demo": ("show the bundled demo model classifying freshly generated pictures",
             "  clipcore demo\n  clipcore demo --count 12 --seed 7 --out grid.png\n  clipcore demo --json",
             _demo_args, run_demo),
    "classify": ("zero-shot classify images against your labels",
                 '  clipcore classify cat.jpg --labels "a cat,a dog,a car"\n'
                 '  clipcore classify *.png --labels "red circle,blue square" --template "a {}" --json\n'
                 '  clipcore classify x.jpg --labels "day,night" --model ViT-B-32.safetensors --backend torchscript',
                 _classify_args, run_classify),
    "embed": ("embed many images into one .npy or .safetensors file (resumable)",
              "  clipcore embed photos/ --out photos.npy\n"
              "  clipcore embed list.txt --out features.safetensors --batch-size 64 --model ViT-B/32\n"
              "  (interrupted? run the same command again: finished batches are kept in OUT.parts/)",
              _embed_args, run_embed),
    "inspect": ("describe a checkpoint: format, architecture, assumptions, size, SHA-256, safety",
                "  clipcore inspect model.pt\n  clipcore inspect demo --json", _inspect_args, run_inspect),
    "convert": ("rewrite a pickle or TorchScript checkpoint as safetensors, without executing it",
                "  clipcore convert ViT-B-32.pt ViT-B-32.safetensors\n"
                "  clipcore convert epoch_32.pt model.safetensors --dtype fp16 --force",
                _convert_args, run_convert),
    "download": ("fetch a released checkpoint into the cache (verified by SHA-256) and print its path",
                 "  clipcore download ViT-B/32\n  CLIPCORE_MIRROR=https://mirror.example/clip clipcore download RN50\n"
                 "  clipcore download https://host/models/x.safetensors --sha256 <hex> --root ./models",
                 _download_args, run_download),
}


def build_parser() -> argparse.ArgumentParser:
    import clipcore

    parser = argparse.ArgumentParser(
        prog="clipcore", description="Load any CLIP checkpoint safely and use it from the command line.",
        epilog="examples:\n" + "\n".join(examples.splitlines()[0] for _, examples, *_ in COMMANDS.values())
               + "\n\n'clipcore COMMAND --help' shows each command's options and more examples.\n"
               "exit status: 0 done, 1 failed (the message says why and how to fix it), 2 bad arguments, "
               "130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"clipcore {clipcore.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what clipcore does (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help, examples, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                           epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(run=run, subparser=p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version (0) or a usage error (2, already printed)
        return int(exit.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return args.run(args)
    except UsageError as e:
        args.subparser.print_usage(sys.stderr)
        print(f"clipcore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ClipcoreError as e:
        print(f"error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"fix: {e.fix}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        again = " (finished batches are kept: run the same command again to resume)" if args.command == "embed" else ""
        print(f"\ninterrupted{again}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
