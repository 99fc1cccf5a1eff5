"""Shared pieces of the training tests: the reference losses, a tiny CLIP, in-memory batches, and the work
each rank does in the multi-process tests (module-level functions, so `clipcore.train.launch` can start them).

Everything a rank returns is plain tensors; the comparisons happen in the test process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from clipcore.towers import build_model
from clipcore.train import TrainConfig, Trainer, World
from clipcore.train.distributed import reduce_gradients
from clipcore.train.loss import SIGLIP_EXCHANGES, ClipLoss, SigLipLoss
from spec.config import ClipConfig, TextConfig, VisionConfig

_REFERENCE_LOSS = None


def reference_losses():
    """open_clip/loss.py of the installed open-clip-torch, loaded on its own.

    Importing the `open_clip` package costs seconds (timm, the model registry); its loss module needs only
    torch, so each test process loads just that file.
    """
    global _REFERENCE_LOSS
    if _REFERENCE_LOSS is None:
        package = importlib.util.find_spec("open_clip")
        path = Path(next(iter(package.submodule_search_locations))) / "loss.py"
        spec = importlib.util.spec_from_file_location("_open_clip_reference_loss", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _REFERENCE_LOSS = module
    return _REFERENCE_LOSS


# --- every option of both losses ----------------------------------------------------------------------------


def loss_cases() -> list[dict[str, Any]]:
    """name, our loss, the reference loss (as factories of a World), the logit bias, and whether the
    multi-process gradient is the exact whole-batch gradient."""
    cases = []
    for local_loss in (False, True):
        for gather_with_grad in (False, True):
            for bias in (None, -2.0):
                cases.append(
                    {
                        "name": f"clip-local{local_loss:d}-gwg{gather_with_grad:d}-bias{bias is not None}",
                        "ours": lambda w, ll=local_loss, g=gather_with_grad: ClipLoss(ll, g, world=w),
                        "ref": lambda w, ll=local_loss, g=gather_with_grad: reference_losses().ClipLoss(
                            local_loss=ll, gather_with_grad=g, rank=w.rank, world_size=w.size
                        ),
                        "bias": bias,
                        # local_loss without gather_with_grad drops the gradient through other ranks' rows
                        "exact": not (local_loss and not gather_with_grad),
                    }
                )
    for exchange in SIGLIP_EXCHANGES:
        for bias in (None, -10.0):
            cases.append(
                {
                    "name": f"siglip-{exchange}-bias{bias is not None}",
                    "ours": lambda w, e=exchange: SigLipLoss(e, world=w),
                    "ref": lambda w, e=exchange: reference_losses().SigLipLoss(
                        rank=w.rank, world_size=w.size, dist_impl=e
                    ),
                    "bias": bias,
                    "exact": True,
                }
            )
    return cases


def random_features(seed: int, n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image and text features, correlated like a half-trained model's."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, dim, generator=g)
    texts = images + 0.8 * torch.randn(n, dim, generator=g)
    return F.normalize(images, dim=-1), F.normalize(texts, dim=-1)


def run_loss(loss: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor, bias: float | None) -> dict:
    """The loss and the gradients of everything it depends on."""
    images, texts = images.clone().requires_grad_(), texts.clone().requires_grad_()
    log_scale = torch.tensor(math.log(12.0), requires_grad=True)
    logit_bias = torch.tensor(bias, requires_grad=True) if bias is not None else None
    value = loss(images, texts, log_scale.exp(), logit_bias)
    value.backward()
    return {
        "loss": value.detach(),
        "image": images.grad,
        "text": texts.grad,
        "scale": log_scale.grad,
        "bias": logit_bias.grad if logit_bias is not None else None,
    }


def loss_rank(world: World, n: int, dim: int, seed: int) -> dict[str, dict[str, dict]]:
    """On each rank: every case, ours and the reference's, on this rank's share of one global batch."""
    images, texts = random_features(seed, n * world.size, dim)
    mine = slice(world.rank * n, (world.rank + 1) * n)
    out = {}
    for case in loss_cases():
        out[case["name"]] = {
            impl: run_loss(case[impl](world), images[mine], texts[mine], case["bias"])
            for impl in ("ours", "ref")
        }
    return out


# --- a tiny CLIP and in-memory batches ----------------------------------------------------------------------


def tiny_config(**changes: Any) -> ClipConfig:
    """A 2-layer ViT (16px images, 8px patches) and a 2-layer text transformer (vocabulary 64, context 8)."""
    config = ClipConfig(
        embed_dim=16,
        vision=VisionConfig(image_size=16, layers=2, width=32, head_width=16, patch_size=8),
        text=TextConfig(context_length=8, vocab_size=64, width=32, heads=2, layers=2),
    )
    return config.replace(**changes) if changes else config


def tiny_model(seed: int = 0, config: ClipConfig | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(config or tiny_config(), device="cpu")
    model.init_weights()
    return model.train()


def random_batch(seed: int, n: int, config: ClipConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images and token sequences (end-of-text = the largest id, at a random position)."""
    config = config or tiny_config()
    g = torch.Generator().manual_seed(seed)
    size, ctx, vocab = config.vision.image_size_hw, config.text.context_length, config.text.vocab_size
    images = torch.randn(n, 3, *size, generator=g)
    tokens = torch.randint(1, vocab - 1, (n, ctx), generator=g)
    ends = torch.randint(2, ctx, (n,), generator=g)
    for row, end in enumerate(ends.tolist()):
        tokens[row, end] = vocab - 1
        tokens[row, end + 1 :] = 0
    return images, tokens


class TensorBatches:
    """An in-memory BatchSource sharded like CaptionBatches: seeded order per epoch, rank r takes the r-th
    block of each global batch."""

    def __init__(self, images, tokens, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.images, self.tokens = images, tokens
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed

    def __len__(self) -> int:
        return self.images.shape[0] // (self.batch_size * self.world_size)

    def batches(self, epoch: int = 0, start: int = 0):
        order = torch.randperm(
            self.images.shape[0], generator=torch.Generator().manual_seed(self.seed + epoch)
        )
        for index in range(start, len(self)):
            first = (index * self.world_size + self.rank) * self.batch_size
            rows = order[first : first + self.batch_size]
            yield self.images[rows], self.tokens[rows]


def model_gradients(world: World, n: int, seed: int, options: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Parameter gradients of one step's forward/backward on this rank's share, reduced over ranks."""
    model = tiny_model(seed, tiny_config(init_logit_bias=-2.0) if options.get("loss") == "siglip" else None)
    accum = options.get("accum_freq", 1)
    images, tokens = random_batch(seed + 1, n * world.size, model.config)
    mine = slice(world.rank * n, (world.rank + 1) * n)
    images, tokens = images[mine], tokens[mine]
    trainer = Trainer(model, [], TrainConfig(steps=1, seed=None, **options), world=world)
    parts = [(i, t) for i, t in zip(images.chunk(accum), tokens.chunk(accum), strict=True)]
    trainer.forward_backward(parts)
    reduce_gradients(trainer.tower_params, trainer.shared_params, world, trainer.loss.tower_grad_copies)
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def train_run(world: World, n: int, steps: int, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """A few full training steps on this rank's shard of a fixed dataset; the final weights and the losses."""
    model = tiny_model(seed)
    images, tokens = random_batch(seed + 1, 4 * n, model.config)
    data = TensorBatches(images, tokens, n // world.size, world.rank, world.size, seed=seed)
    # eps 1e-3: parameters whose true gradient is 0 (the key bias of attention) get rounding noise, which
    # Adam with a tiny eps would blow up into full-size steps that differ between runs.
    config = TrainConfig(steps=steps, lr=1e-3, warmup=2, eps=1e-3, **options)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    history = Trainer(model, data, config, world=world).fit()
    return {
        "initial": initial,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "losses": [r["loss"] for r in history],
    }


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def callback(trainer, record):
        if record["step"] == step:
            raise _Stop

    return callback


def interrupted_run(
    world: World, n: int, steps: int, seed: int, options: dict[str, Any], folder: str
) -> dict:
    """train_run stopped after step `steps - 1` (its checkpoint written), then resumed in a fresh trainer with
    a differently initialised model: the final weights."""
    model = tiny_model(seed)
    images, tokens = random_batch(seed + 1, 4 * n, model.config)
    data = TensorBatches(images, tokens, n // world.size, world.rank, world.size, seed=seed)
    config = TrainConfig(
        steps=steps, lr=1e-3, warmup=2, eps=1e-3, checkpoint_dir=folder, checkpoint_every=steps - 1, **options
    )
    with contextlib.suppress(_Stop):
        Trainer(model, data, config, world=world).fit(callback=_stop_at(steps - 1))
    fresh = tiny_model(seed + 99)
    Trainer(fresh, data, config, world=world).fit()
    return {k: v.clone() for k, v in fresh.state_dict().items()}


def distributed_suite(world: World, n: int, dim: int, seed: int, folder: str) -> dict[str, Any]:
    """Everything the multi-process test checks, in one launch (starting processes is the slow part)."""
    options = {"gather_with_grad": True, "local_loss": True}
    return {
        "losses": loss_rank(world, n, dim, seed),
        "gradients": {name: model_gradients(world, n, seed, opts) for name, opts in GRADIENT_OPTIONS.items()},
        "train": train_run(world, n * world.size, 3, seed, options),
        "resumed": interrupted_run(world, n * world.size, 3, seed, options, folder),
    }


# Loss options whose reduced multi-process gradient must equal the single-process gradient of the whole batch.
GRADIENT_OPTIONS: dict[str, dict[str, Any]] = {
    "clip": {},
    "clip-gather-with-grad": {"gather_with_grad": True},
    "clip-local-gather-with-grad": {"local_loss": True, "gather_with_grad": True},
    "clip-accum2": {"accum_freq": 2},
    "siglip-bidir": {"loss": "siglip"},
    "siglip-gather-accum2": {"loss": "siglip", "siglip_exchange": "gather", "accum_freq": 2},
}


# --- a synthetic dataset that can be learnt in seconds ------------------------------------------------------

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 220, 40),
    "purple": (140, 50, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
CAPTION_TEMPLATES = ("a {} square", "a photo of a {} square", "a {} square on a grey background", "{}")


def coloured_square(colour: str, size: int, rng) -> Any:
    """A PIL image: a square of `colour` (jittered) at a random place on grey noise."""
    import numpy as np
    from PIL import Image

    pixels = rng.integers(90, 166, (size, size, 1)) + rng.integers(-12, 13, (size, size, 3))
    side = int(rng.integers(size // 3, size * 2 // 3 + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
    rgb = np.array(COLOURS[colour]) + rng.integers(-20, 21, 3)
    pixels[top : top + side, left : left + side] = rgb
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_colour_squares(folder: Path, n_train: int, n_eval_per_class: int, size: int = 32, seed: int = 0):
    """Training images + captions.csv under folder/train, and class folders under folder/eval."""
    import csv

    import numpy as np

    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    (folder / "train").mkdir(parents=True)
    with open(folder / "train" / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "caption"])
        for i in range(n_train):
            colour = names[i % len(names)]
            coloured_square(colour, size, rng).save(folder / "train" / f"{i:05d}.png")
            template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
            writer.writerow([f"{i:05d}.png", template.format(colour)])
    for colour in names:
        (folder / "eval" / colour).mkdir(parents=True)
        for i in range(n_eval_per_class):
            coloured_square(colour, size, rng).save(folder / "eval" / colour / f"{i:03d}.png")
    return folder / "train" / "captions.csv", folder / "eval"


# --- resuming -----------------------------------------------------------------------------------------------

RESUME_SETUPS: dict[str, dict[str, Any]] = {
    # patch dropout draws from torch's generator every step: only a restored RNG state repeats it
    "clip-patch-dropout": {"config": {"vision": {"patch_dropout": 0.5}}, "train": {}},
    "siglip-fp16-accum2-clip": {
        "config": {"init_logit_bias": -5.0},
        "train": {"loss": "siglip", "precision": "amp_fp16", "accum_freq": 2, "grad_clip_norm": 1.0},
    },
}


def resume_trainer(setup: str, steps: int, folder: Path | None, model_seed: int = 0, **train: Any) -> Trainer:
    """A trainer for one of RESUME_SETUPS over a small fixed dataset (4 batches of 8 per epoch)."""
    spec = RESUME_SETUPS[setup]
    model = tiny_model(model_seed, tiny_config(**spec["config"]))
    images, tokens = random_batch(11, 32, model.config)
    options = {**spec["train"], **train}
    if folder is not None:
        options["checkpoint_dir"] = str(folder)
    config = TrainConfig(steps=steps, lr=2e-3, warmup=2, seed=5, **options)
    return Trainer(model, TensorBatches(images, tokens, 8, seed=3), config)


def crash_while_saving(setup: str, folder: str, steps: int, crash_at: int) -> None:
    """Train with a checkpoint after every step and die (SIGKILL, no clean-up) in the middle of writing the
    checkpoint of step `crash_at`: its files are written, the rename that would publish them never happens.
    Run in a subprocess by the resume test."""
    import os
    import signal

    from clipcore.train import checkpointing

    torch.set_num_threads(1)
    publish = os.replace

    def replace_or_die(src, dst):
        if Path(dst).name == checkpointing.checkpoint_dir(folder, crash_at).name:
            os.kill(os.getpid(), signal.SIGKILL)
        publish(src, dst)

    checkpointing.os.replace = replace_or_die
    resume_trainer(setup, steps, Path(folder), checkpoint_every=1, keep_checkpoints=None).fit()


def word_tokenizer(context_length: int = 8, vocab_size: int = 64):
    """A toy tokenizer for the tiny model: start token 1, words hashed to 2..vocab-2, end token vocab-1."""
    import zlib

    def tokenize(texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [2 + zlib.crc32(w.encode()) % (vocab_size - 3) for w in text.lower().split()]
            ids = [1, *words[: context_length - 2], vocab_size - 1]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    return tokenize
