"""Zero-shot classification: a classifier made of text, and its top-k accuracy on labelled images.

The classifier is OpenCLIP's `build_zero_shot_classifier`: for each class, every prompt template is filled
with the class name ("a photo of a {}." -> "a photo of a dog."), the prompts are encoded and L2-normalised,
averaged over the templates and normalised again; the columns of the (embed_dim, classes) matrix are the
classes. Classes are encoded `classes_per_batch` at a time (all templates of a class in the same batch).
An image is then classified by 100 * normalised image features @ classifier, as in OpenCLIP's evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from clipcore.errors import DataError
from clipcore.train.data import caption_tokenizer

__all__ = ["accuracy", "build_zero_shot_classifier", "zero_shot_accuracy"]

Template = str | Callable[[str], str]


@contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def build_zero_shot_classifier(
    model: nn.Module,
    classnames: Sequence[str],
    templates: Sequence[Template],
    *,
    tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    classes_per_batch: int | None = 10,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The (embed_dim, len(classnames)) zero-shot classifier; templates are format strings or callables.

    `tokenizer` defaults to clipcore's tokenizer at the model's context length; `classes_per_batch=None`
    encodes all classes at once. The model is in eval mode while encoding (its mode is restored after).
    """
    if not classnames or not templates:
        raise DataError(
            f"a zero-shot classifier needs class names and templates, got {len(classnames)} and "
            f"{len(templates)}",
            fix='pass e.g. classnames=["cat", "dog"], templates=["a photo of a {}."]',
        )
    tokenizer = tokenizer or caption_tokenizer(getattr(model, "context_length", 77))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    step = classes_per_batch or len(classnames)
    columns = []
    with torch.no_grad(), _eval_mode(model):
        for first in range(0, len(classnames), step):
            names = classnames[first : first + step]
            prompts = [t.format(name) if isinstance(t, str) else t(name) for name in names for t in templates]
            features = model.encode_text(tokenizer(prompts).to(device), normalize=True)
            per_class = features.reshape(len(names), len(templates), -1).mean(dim=1)
            columns.append((per_class / per_class.norm(dim=1, keepdim=True)).T)
    return torch.cat(columns, dim=1)


def accuracy(logits: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1, 5)) -> list[int]:
    """How many rows have their target among their k highest logits, for each k (capped at the classes)."""
    k_max = min(max(topk), logits.shape[1])
    predictions = logits.topk(k_max, dim=1).indices  # (N, k_max), best first
    hits = predictions == targets.view(-1, 1)
    return [int(hits[:, : min(k, k_max)].any(dim=1).sum()) for k in topk]


def zero_shot_accuracy(
    model: nn.Module,
    classifier: torch.Tensor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    topk: Sequence[int] = (1, 5),
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """{'top1': ..., 'top5': ..., 'count': n} over (images, labels) batches, e.g. data.LabelledBatches."""
    device = torch.device(device) if device is not None else classifier.device
    correct, count = [0] * len(topk), 0
    with torch.no_grad(), _eval_mode(model):
        for images, labels in batches:
            features = model.encode_image(images.to(device), normalize=True)
            logits = 100.0 * features @ classifier.to(features.dtype)
            for i, hits in enumerate(accuracy(logits, labels.to(device), topk)):
                correct[i] += hits
            count += labels.shape[0]
    if count == 0:
        raise DataError("zero-shot evaluation got no images", fix="pass at least one (images, labels) batch")
    return {**{f"top{k}": c / count for k, c in zip(topk, correct, strict=True)}, "count": count}
