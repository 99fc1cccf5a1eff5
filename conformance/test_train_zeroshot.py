"""Zero-shot classification against OpenCLIP's build_zero_shot_classifier, and top-k accuracy."""

from __future__ import annotations

import pytest
import torch

from clipcore.errors import DataError
from clipcore.train import accuracy, build_zero_shot_classifier, zero_shot_accuracy
from conformance.train_cases import random_batch, tiny_model, word_tokenizer

CLASSES = [f"class{i}" for i in range(13)]
TEMPLATES = ["a photo of a {}.", "a {} in the wild", "{}"]


# Tiny tensors: thread start-up would cost more than the work (and CI machines are shared).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("per_batch", [10, 4, 1, None])
@pytest.mark.parametrize("callable_templates", [False, True])
def test_classifier_matches_reference(per_batch, callable_templates):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier as reference

    model = tiny_model().eval()
    tokenizer = word_tokenizer()
    templates = [t.format for t in TEMPLATES] if callable_templates else TEMPLATES
    ours = build_zero_shot_classifier(
        model, CLASSES, templates, tokenizer=tokenizer, classes_per_batch=per_batch
    )
    theirs = reference(model, tokenizer, CLASSES, templates, num_classes_per_batch=per_batch)
    assert ours.shape == (model.config.embed_dim, len(CLASSES))
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    assert torch.allclose(ours.norm(dim=0), torch.ones(len(CLASSES)))
    assert model.training is False


def test_classifier_restores_training_mode_and_refuses_empty_input():
    model = tiny_model().train()
    build_zero_shot_classifier(model, ["a"], ["{}"], tokenizer=word_tokenizer())
    assert model.training
    with pytest.raises(DataError, match="class names and templates"):
        build_zero_shot_classifier(model, [], ["{}"], tokenizer=word_tokenizer())


def reference_topk_counts(logits, targets, topk):
    """OpenCLIP's training accuracy: the k best predictions per row, counted where one equals the target."""
    best = logits.topk(max(topk), 1, True, True).indices.t()
    hits = best.eq(targets.view(1, -1).expand_as(best))
    return [int(hits[:k].reshape(-1).float().sum()) for k in topk]


def test_accuracy_counts_like_the_reference():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 20, generator=g)
    targets = torch.randint(0, 20, (300,), generator=g)
    assert accuracy(logits, targets, (1, 5, 10)) == reference_topk_counts(logits, targets, (1, 5, 10))
    assert accuracy(logits[:, :3], targets % 3, (1, 5)) == [
        accuracy(logits[:, :3], targets % 3, (1,))[0],
        300,
    ]


def test_zero_shot_accuracy_over_batches():
    model = tiny_model()
    classifier = torch.nn.functional.normalize(torch.randn(model.config.embed_dim, 7), dim=0)
    images, _ = random_batch(3, 20, model.config)
    with torch.no_grad():
        predicted = (model.eval().encode_image(images, normalize=True) @ classifier).argmax(dim=1)
    labels = predicted.clone()
    labels[:5] = (labels[:5] + 1) % 7  # 15 of 20 right
    batches = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    result = zero_shot_accuracy(model, classifier, batches, topk=(1, 7))
    assert result == {"top1": 0.75, "top7": 1.0, "count": 20}
    with pytest.raises(DataError, match="no images"):
        zero_shot_accuracy(model, classifier, [])
