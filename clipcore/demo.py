"""The bundled demo model: a small CLIP trained by clipcore on `clipcore.synthetic` pictures, and its checks.

    model, preprocess = clipcore.load("demo")                  # from the package's data, no download
    scenes = held_out_scenes()                                 # a fixed labelled set it never saw
    evaluate(model, preprocess)                                # {'top1': 0.9.., 'shape': ..., ...}

The model was trained on captions such as "a small red star on a striped background" (see
scripts/train_demo.py for the exact run, and demo.json next to the weights for its provenance). Here it is
asked zero-shot which of the 48 colour-and-shape classes ("red circle", ..., "black heart") a picture shows,
with the prompts in TEMPLATES, and which of the 384 full descriptions (size, colour, shape, background) fits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipcore import synthetic
from clipcore.errors import CheckpointError, DataError, UnsupportedModelError
from clipcore.preprocess import Preprocess
from clipcore.tokenizer import VOCAB_SIZE, tokenize
from clipcore.train.zeroshot import build_zero_shot_classifier

__all__ = [
    "EVAL_SEED",
    "NAME",
    "TEMPLATES",
    "Predictions",
    "evaluate",
    "full_descriptions",
    "held_out_scenes",
    "image_features",
    "predict",
    "provenance",
    "weights_path",
]

NAME = "demo"
WEIGHTS = "demo.safetensors"
PROVENANCE = "demo.json"
DATA = Path(__file__).parent / "data"
# Prompts for a class name such as "red circle": the caption phrasings the model was trained on.
TEMPLATES = ("a {}", "a photo of a {}", "a picture of a {}")
# The held-out evaluation set: scenes drawn from this seed (the training run draws from other streams).
EVAL_SEED = 1_000_003
EVAL_PER_CLASS = 10


def weights_path() -> Path:
    """Where the bundled weights are (package data)."""
    return DATA / WEIGHTS


def provenance() -> dict[str, Any]:
    """The demo model's provenance record: config, training command, seed, steps, held-out accuracy."""
    path = DATA / PROVENANCE
    if not path.is_file():
        raise CheckpointError(f"the demo model's provenance record should be at {path}, which is missing",
                              fix="reinstall clipcore (the file is package data), or rebuild it with "
                                  "scripts/train_demo.py")
    return json.loads(path.read_text(encoding="utf-8"))


def held_out_scenes(seed: int = EVAL_SEED, per_class: int = EVAL_PER_CLASS) -> list[synthetic.Scene]:
    """`per_class` scenes of each colour-and-shape class (random size, background, nuisances), in class order."""
    rng = np.random.default_rng(seed)
    return [
        synthetic.random_scene(rng, shape=shape, colour=colour)
        for colour in synthetic.COLOURS
        for shape in synthetic.SHAPES
        for _ in range(per_class)
    ]


def full_descriptions() -> list[tuple[str, str, str, str]]:
    """Every (size, colour, shape, background) combination: 2 * 8 * 6 * 4 = 384."""
    return [
        (size, colour, shape, background)
        for size in synthetic.SIZES
        for colour in synthetic.COLOURS
        for shape in synthetic.SHAPES
        for background in synthetic.BACKGROUNDS
    ]


@dataclass(frozen=True)
class Predictions:
    """Zero-shot class probabilities for a batch of images: `probs[i, j]` for image i, label j."""

    labels: list[str]
    probs: torch.Tensor

    def top(self, index: int, k: int = 3) -> list[tuple[str, float]]:
        values, columns = self.probs[index].topk(min(k, len(self.labels)))
        return [(self.labels[c], float(v)) for v, c in zip(values.tolist(), columns.tolist(), strict=True)]


def image_features(
    model: torch.nn.Module, preprocess: Preprocess, images: Sequence[Image.Image | str | Path], batch_size: int = 256
) -> torch.Tensor:
    """Unit-length float32 image features (len(images), embed_dim), on the CPU."""
    rows = []
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            pixels = preprocess.batch(images[first : first + batch_size]).to(_device(model))
            rows.append(model.encode_image(pixels, normalize=True).float().cpu())
    return torch.cat(rows) if rows else torch.empty(0, model.config.embed_dim)


def predict(
    model: torch.nn.Module,
    preprocess: Preprocess,
    images: Sequence[Image.Image | str | Path],
    labels: Sequence[str],
    templates: Sequence[str] = ("{}",),
    batch_size: int = 256,
    features: torch.Tensor | None = None,
) -> Predictions:
    """Zero-shot probabilities of `labels` for each image: softmax of 100 x cosine similarity, as in OpenCLIP's
    evaluation; each label's text features are averaged over `templates` (format strings with one `{}`).
    `features`: the images' `image_features`, when they are already computed (then `images` is not read)."""
    if not labels:
        raise DataError("no labels to classify the images with", fix='pass labels such as "a dog,a cat"')
    context = model.config.text.context_length
    if model.config.text.vocab_size < VOCAB_SIZE:  # its own tokenizer, not CLIP's: token ids would overflow
        raise UnsupportedModelError(
            f"the model's text tower has a {model.config.text.vocab_size}-token vocabulary; clipcore's tokenizer "
            f"produces ids up to {VOCAB_SIZE - 1}", fix="use a model trained with CLIP's standard tokenizer")

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return tokenize(texts, context_length=context, truncate=True)

    classifier = build_zero_shot_classifier(model, list(labels), list(templates), tokenizer=tokenizer,
                                            classes_per_batch=64, device=_device(model))
    if features is None:
        features = image_features(model, preprocess, images, batch_size)
    return Predictions(list(labels), (100.0 * features @ classifier.float().cpu()).softmax(dim=-1))


def _device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)  # every backend's model has one; a bare nn.Module may not
    return device if device is not None else next(model.parameters()).device


def evaluate(
    model: torch.nn.Module, preprocess: Preprocess, seed: int = EVAL_SEED, per_class: int = EVAL_PER_CLASS
) -> dict[str, Any]:
    """Zero-shot accuracy on the held-out set.

    top1: over the 48 colour-and-shape classes with TEMPLATES (chance 1/48). full_top1: over the 384 full
    descriptions ("a small red circle on a striped background", chance 1/384); shape, colour, size,
    background: how often the best full description names that attribute right (chance 1/6, 1/8, 1/2, 1/4).
    """
    scenes = held_out_scenes(seed, per_class)
    size = preprocess.size[0]
    images = [synthetic.render(scene, size) for scene in scenes]
    classes = synthetic.class_names()
    truth = torch.tensor([classes.index(scene.label) for scene in scenes])
    features = image_features(model, preprocess, images)
    by_class = predict(model, preprocess, images, classes, TEMPLATES, features=features)
    result: dict[str, Any] = {"count": len(scenes), "classes": len(classes),
                              "top1": float((by_class.probs.argmax(1) == truth).float().mean())}
    combos = full_descriptions()
    described = [f"{s} {c} {sh} on a {b} background" for s, c, sh, b in combos]
    best = predict(model, preprocess, images, described, ("a {}",), features=features).probs.argmax(1).tolist()
    for position, name in enumerate(("size", "colour", "shape", "background")):
        hits = [combos[b][position] == getattr(scene, name) for b, scene in zip(best, scenes, strict=True)]
        result[name] = sum(hits) / len(hits)
    result["full_top1"] = sum(combos[b] == (s.size, s.colour, s.shape, s.background)
                              for b, s in zip(best, scenes, strict=True)) / len(scenes)
    return result
