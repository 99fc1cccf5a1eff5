"""Training throughput on CPU, clipcore against OpenCLIP on the same inputs, same run, one thread.

- the losses alone (forward + backward), ClipLoss and SigLipLoss, at batch 1024 x 512;
- a whole optimizer step of a small CLIP (ViT 4 x 256 on 64px images, text 4 x 256, batch 32): clipcore's
  Trainer.train_step against the same step written with OpenCLIP's model (our weights loaded), its ClipLoss,
  AdamW with its training script's parameter groups and the logit-scale clamp.

    pytest benchmarks/bench_train.py -s       # prints both rates and the ratio

Rounds are interleaved (reference, clipcore, ...) and the best round of each is reported, so that load from
other processes hits both alike; every round's rate is in extra_info.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
import torch

from benchmarks import harness
from clipcore.train import TrainConfig, Trainer, World
from clipcore.train.loss import ClipLoss, SigLipLoss
from conformance.reference import openclip_model
from conformance.train_cases import random_batch, random_features, reference_losses, tiny_model
from spec.config import ClipConfig, TextConfig, VisionConfig

ROUNDS = 5

SMALL = ClipConfig(
    embed_dim=256,
    vision=VisionConfig(image_size=64, layers=4, width=256, head_width=64, patch_size=16),
    text=TextConfig(context_length=32, width=256, heads=4, layers=4),
)


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def best_rates(runs: dict[str, Callable[[], object]], items: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(harness.rounds(ROUNDS)):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name].append(items / (time.perf_counter() - start))
    return rates


def report(benchmark, what: str, unit: str, rates: dict[str, list[float]]) -> None:
    """Record best rates and their ratio (benchmarks/harness.py); training has no target ratio in the issues."""
    best = {name: max(values) for name, values in rates.items()}
    per_round = sorted(a / b for a, b in zip(rates["clipcore"], rates["open_clip"], strict=True))
    harness.record(benchmark, what, best["clipcore"], best["open_clip"], f"{unit}/s",
                   ratio_range=(per_round[0], per_round[-1]), reference_name="open_clip",
                   extra={"rates_per_round": {name: [round(v, 1) for v in values] for name, values in rates.items()}})


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_loss_throughput(benchmark, one_thread, kind):
    images, texts = random_features(0, 1024, 512)
    ours = ClipLoss() if kind == "clip" else SigLipLoss()
    theirs = reference_losses().ClipLoss() if kind == "clip" else reference_losses().SigLipLoss()
    bias = torch.tensor(-10.0) if kind == "siglip" else None

    def step(loss) -> Callable[[], None]:
        def run() -> None:
            im, tx = images.clone().requires_grad_(), texts.clone().requires_grad_()
            scale = torch.tensor(math.log(10.0), requires_grad=True)
            loss(im, tx, scale.exp(), bias).backward()

        return run

    rates = best_rates({"open_clip": step(theirs), "clipcore": step(ours)}, items=1)
    report(benchmark, f"train: {kind} loss forward+backward, batch 1024 x 512", "steps", rates)
    benchmark.pedantic(step(ours), rounds=harness.rounds(ROUNDS), iterations=1)


def test_train_step_throughput(benchmark, one_thread):
    batch = 32
    images, tokens = random_batch(1, batch, SMALL)
    ours = tiny_model(0, SMALL)
    theirs = openclip_model(SMALL, device="cpu").train()
    theirs.load_state_dict(ours.state_dict())
    trainer = Trainer(ours, [], TrainConfig(steps=10**6, lr=1e-5, seed=None), world=World())

    # The same step by hand with OpenCLIP: its model, its loss, its training script's AdamW groups and clamp.
    loss = reference_losses().ClipLoss()
    named = list(theirs.named_parameters())
    no_decay = [
        p for n, p in named if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    ]
    rest = [p for n, p in named if all(p is not q for q in no_decay)]
    optimizer = torch.optim.AdamW(
        [{"params": no_decay, "weight_decay": 0.0}, {"params": rest, "weight_decay": 0.2}],
        lr=1e-5,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def reference_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        image_features, text_features, scale = theirs(images, tokens)
        value = loss(image_features, text_features, scale)
        value.backward()
        optimizer.step()
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, math.log(100))
        return value.item()

    first_ours = trainer.train_step([(images, tokens)])["loss"]
    first_theirs = reference_step()
    assert first_ours == pytest.approx(first_theirs, rel=1e-5)  # the same work

    rates = best_rates(
        {"open_clip": reference_step, "clipcore": lambda: trainer.train_step([(images, tokens)])}, items=batch
    )
    report(benchmark, "train: optimizer step, ViT 4x256 @64px + text 4x256, batch 32", "samples", rates)
    benchmark.pedantic(lambda: trainer.train_step([(images, tokens)]), rounds=harness.rounds(ROUNDS),
                       iterations=1)
