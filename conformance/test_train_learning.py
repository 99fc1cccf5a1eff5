"""A real learning test: a tiny CLIP trained from scratch on synthetic images learns to read colours.

Images are squares of one of 8 colours at random places on grey noise (32x32 PNG files), captioned with
one of four phrasings naming the colour ("a red square", "a photo of a red square", ...). The whole
pipeline runs: captions CSV -> Preprocess.batch in threads -> clipcore's BPE tokenizer -> the training
loop -> zero-shot classification of held-out images by prompts the model never saw verbatim for them.

Thresholds (measured over four seeds: loss 3.8-4.0 -> 1.43-1.47, top-1 0.99-1.0): the mean loss of the last 20
steps must fall below 60% of the first 5 steps' mean, and zero-shot top-1 must reach 0.6 (chance: 0.125).
The loss cannot approach 0: a batch of 32 holds about 4 images per colour, with interchangeable captions.
"""

from __future__ import annotations

import time

import pytest
import torch

from clipcore.preprocess import Preprocess
from clipcore.towers import build_model
from clipcore.train import (
    CaptionBatches,
    LabelledBatches,
    TrainConfig,
    Trainer,
    build_zero_shot_classifier,
    read_captions,
    read_image_folder,
    zero_shot_accuracy,
)
from conformance.train_cases import COLOURS, write_colour_squares
from spec.config import ClipConfig, TextConfig, VisionConfig

TINY = ClipConfig(
    embed_dim=32,
    vision=VisionConfig(image_size=32, layers=2, width=32, head_width=16, patch_size=8),
    text=TextConfig(context_length=16, width=32, heads=2, layers=2),  # the real 49408-token vocabulary
)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_clip_learns_colours(tmp_path):
    started = time.perf_counter()
    captions, eval_folder = write_colour_squares(tmp_path, n_train=512, n_eval_per_class=20, seed=0)
    torch.manual_seed(0)
    model = build_model(TINY, device="cpu")
    model.init_weights()
    preprocess = Preprocess(32)
    data = CaptionBatches(read_captions(captions), preprocess, None, 32, context_length=16, workers=1)

    config = TrainConfig(steps=200, lr=1e-3, warmup=20, weight_decay=0.1)
    history = Trainer(model, data, config).fit()
    losses = [r["loss"] for r in history]
    first, last = sum(losses[:5]) / 5, sum(losses[-20:]) / 20

    examples, classnames = read_image_folder(eval_folder)
    assert sorted(classnames) == sorted(COLOURS)
    classifier = build_zero_shot_classifier(model, classnames, ["a {} square", "a photo of a {} square"])
    result = zero_shot_accuracy(model, classifier, LabelledBatches(examples, preprocess, 64, workers=1))
    print(f"loss {first:.3f} -> {last:.3f}, zero-shot {result}, {time.perf_counter() - started:.1f}s")

    assert last < 0.6 * first, (first, last)
    assert result["count"] == 160 and result["top1"] >= 0.6, result
